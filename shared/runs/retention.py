"""How long the Durable Functions history of ended runs is kept, and what a purge takes.

Every run leaves an orchestration instance in the task hub (its input, its history,
its output), and nothing removes it: the tables grow for as long as the app runs. A
daily timer (functions/triggers.py, ``purge_history``) deletes the history of
instances created more than ``DURABLE_HISTORY_DAYS`` days ago that have ended
(Completed, Failed, Terminated); a run still going is never touched.

The history is also how a run is known to be done: the launcher does not start a run
folder again while its instance says Completed (shared/runs/launcher.py). A folder
whose history is gone would be started again by the schedule if it were still the
newest in the inbox, so the deployment keeps the history longer than the inbox keeps
folders (infra/main.bicep). What a run leaves for people, its report, lives in the
reports container and expires by its own rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.errors import ConfigError

HISTORY_DAYS_SETTING = "DURABLE_HISTORY_DAYS"
DEFAULT_HISTORY_DAYS = 30
ENDED = ("Completed", "Failed", "Terminated")
"""The runtime statuses whose history may go: a running or pending run keeps its own."""
PURGE_SCHEDULE = "0 30 4 * * *"
"""NCRONTAB (UTC): daily at 04:30, after the default 03:00 scheduled refresh."""
BEGINNING = datetime(2000, 1, 1, tzinfo=UTC)
"""The purge's lower bound (the Durable API requires one): before any run."""


@dataclass(frozen=True)
class PurgeWindow:
    """Instances created in ``[since, before)`` with an ended status are purged."""

    days: int
    since: datetime
    before: datetime


def history_days(settings: Mapping[str, str]) -> int:
    """``DURABLE_HISTORY_DAYS``: a whole number of days, at least 1."""
    raw = settings.get(HISTORY_DAYS_SETTING, "").strip()
    if not raw:
        return DEFAULT_HISTORY_DAYS
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if days < 1:
        raise ConfigError(
            f"{HISTORY_DAYS_SETTING} must be a whole number of days, at least 1, not {raw[:40]!r}"
        )
    return days


def purge_window(settings: Mapping[str, str], now: datetime) -> PurgeWindow:
    """What the purge at ``now`` deletes, by the settings."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    days = history_days(settings)
    return PurgeWindow(days, BEGINNING, now.astimezone(UTC) - timedelta(days=days))
