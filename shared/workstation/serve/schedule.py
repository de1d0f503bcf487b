"""The timer trigger's NCRONTAB schedule: when it fires next.

Azure Functions' schedules have six fields, seconds first
(``{second} {minute} {hour} {day} {month} {day-of-week}``); croniter reads them with
``second_at_beginning``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from croniter import croniter

from shared.errors import CcexportError, ConfigError

log = logging.getLogger("ccexport.serve")


def check_schedule(schedule: str) -> str:
    """The schedule, if it is a six-field NCRONTAB expression; else a ConfigError."""
    fields = schedule.split()
    if len(fields) != 6 or not croniter.is_valid(schedule, second_at_beginning=True):
        raise ConfigError(
            f"the schedule {schedule!r} is not an NCRONTAB expression of six fields "
            "(second minute hour day month day-of-week, e.g. '0 */15 * * * *')"
        )
    return schedule


def next_fire(schedule: str, after: datetime) -> datetime:
    """The first time after ``after`` that the schedule fires (UTC)."""
    found: datetime = croniter(schedule, after, second_at_beginning=True).get_next(datetime)
    return found.astimezone(UTC)


async def run_schedule(
    schedule: str,
    fire: Callable[[bool], Awaitable[None]],
    stop: asyncio.Event,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Call ``fire(past_due)`` at every time the schedule gives, until ``stop`` is set.

    ``past_due`` says the call came more than a second late (the previous one ran long).
    """
    due = next_fire(schedule, clock())
    while not stop.is_set():
        wait = (due - clock()).total_seconds()
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return
            except TimeoutError:
                pass
        late = (clock() - due).total_seconds() > 1.0
        try:
            await fire(late)
        except CcexportError as exc:
            log.warning("the timer trigger failed: %s", exc)
        except Exception:
            log.exception("the timer trigger failed")
        due = next_fire(schedule, max(clock(), due))
