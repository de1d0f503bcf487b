"""How long a run waits between two status polls: short at first, longer later, bounded.

A small import finishes in seconds, so the first poll comes after ``poll_seconds``;
an import of 40,000 contacts takes minutes, and every poll is one request of the API
key's daily quota, so each wait after that is :data:`BACKOFF` times the one before,
up to ``max_poll_seconds``. With a factor of 1.5 the end of an import is seen at most
half the time already waited after it happens (until the cap), and the cap bounds
that lag however long the wait.

The schedule does not start short again when a poll sees progress. Constant Contact
works through an account's imports in turn: when one of a run's imports finishes, its
others are still behind it, so polling faster then would spend requests and find
nothing sooner; and when uploads wait for room in the pending-imports budget, the
imports still queued keep Constant Contact busy, so a slower poll costs no
throughput. Removals are polled on their own count: their membership activities are
small, so that wait starts short again.

Pure and deterministic: the delay is told from a count the orchestrator's tally keeps
(polls made so far), never from a clock; the orchestrator turns it into a durable
timer on the context's clock.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from shared.runs.contract import RunOptions

BACKOFF = 1.5
"""Each wait between polls is this many times the one before, up to the cap."""

_MOST_STEPS = 64
"""Beyond this many polls the cap holds anyway (1.5 ** 64 dwarfs any ratio of options)."""


def poll_delay(options: RunOptions, polls: int) -> float:
    """Seconds to wait before the next poll, when ``polls`` polls have been made.

    The first (``polls == 0``) waits ``poll_seconds``; then 1.5 times longer each
    poll, never longer than ``max_poll_seconds`` (nor shorter than ``poll_seconds``,
    should the cap be set below it).
    """
    cap = max(options.poll_seconds, options.max_poll_seconds)
    steps = min(max(polls, 0), _MOST_STEPS)
    return min(cap, options.poll_seconds * BACKOFF**steps)


def next_poll(
    now: datetime, options: RunOptions, polls: int, deadline: datetime | None = None
) -> datetime:
    """When the next poll is due: :func:`poll_delay` after ``now``, never past ``deadline``.

    Held to the deadline so the last poll of a wait that runs out comes at its end,
    not up to one long interval after it.
    """
    due = now + timedelta(seconds=poll_delay(options, polls))
    return due if deadline is None else min(due, deadline)


def polls_within(options: RunOptions, seconds: float) -> int:
    """The most polls a wait of ``seconds`` makes: the schedule of :func:`poll_delay`
    from its first poll, the last held to the deadline (as :func:`next_poll` holds it).

    Told in closed form once the delay reaches the cap, so a long wait with short
    polls costs no loop per poll. What the daily quota plan (shared/runs/estimate.py)
    counts a wait's polls by.
    """
    cap = max(options.poll_seconds, options.max_poll_seconds)
    waited, polls = 0.0, 0
    while waited < seconds:
        delay = poll_delay(options, polls)
        if delay >= cap:
            return polls + math.ceil((seconds - waited) / cap)
        waited = min(seconds, waited + delay)
        polls += 1
    return polls
