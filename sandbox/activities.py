"""Bulk activities: their status documents and the worker that processes them.

Every bulk request (imports, list membership changes, exports) creates an activity in
state ``initialized``; one worker takes activities in arrival order, moves each to
``processing`` after the configured delay, applies its items at the configured pace
(items per second, updating ``percent_done``), and ends it ``completed`` — or
``failed`` / ``timed_out`` when a fault says so, in which case nothing is applied.
At most ``max_queued`` activities may wait or run at once (the 1,000 queued
activities limit, answered with 429 by the routes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.wire import iso

TERMINAL = frozenset({"completed", "cancelled", "failed", "timed_out"})
STATES = frozenset({"initialized", "processing"}) | TERMINAL
BATCH = 2000  # the most items applied between two yields to the event loop
FIRST_STEP = 200  # items applied in the first slice, before its cost is known
HOLD = 0.005  # seconds of the loop's time one slice should take

# The status counters each kind reports, as the spec's response schemas name them.
IMPORT_KINDS = frozenset({"contacts_json_import", "contacts_file_import"})
MEMBERSHIP_KINDS = frozenset({"add_list_memberships", "remove_list_memberships"})
EXPORT_KIND = "contact_exports"


@dataclass
class Pace:
    """How fast activities move; changeable at run time (``/__sandbox/settings``)."""

    delay: float = 0.05  # seconds an activity stays initialized at least
    items_per_second: float = 250_000.0


class Work:
    """What an activity does: ``total`` items, applied in slices by ``apply``."""

    total: int = 0

    def apply(self, activity: Activity, start: int, end: int) -> None:
        raise NotImplementedError

    def finish(self, activity: Activity) -> None:
        """Runs once after the last item (e.g. to fill in final counters)."""


@dataclass
class Activity:
    activity_id: str
    kind: str
    work: Work
    created_at: float
    state: str = "initialized"
    updated_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    percent_done: int = 0
    items_completed: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    source_file_name: str | None = None
    fault: str | None = None  # "failed" or "timed_out": how a fault ends it
    results_href: str | None = None

    def document(self) -> dict[str, Any]:
        """The activity status document (Activity / ActivityImport / ... in the spec)."""
        doc: dict[str, Any] = {
            "activity_id": self.activity_id,
            "state": self.state,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at or self.created_at),
            "percent_done": self.percent_done,
            "activity_errors": list(self.errors),
        }
        if self.started_at is not None:
            doc["started_at"] = iso(self.started_at)
        if self.completed_at is not None:
            doc["completed_at"] = iso(self.completed_at)
        if self.source_file_name is not None:
            doc["source_file_name"] = self.source_file_name
        status: dict[str, int] = {
            "items_total_count": self.counters.get("items_total_count", self.work.total),
            "items_completed_count": self.items_completed,
        }
        status.update((k, v) for k, v in self.counters.items() if k != "items_total_count")
        doc["status"] = status
        links: dict[str, Any] = {"self": {"href": f"/v3/activities/{self.activity_id}"}}
        if self.results_href is not None and self.state == "completed":
            # The official spec's example writes /v3/contacts_exports/...; the path is
            # /contact_exports/{file_export_id} (contract/constant-contact-v3.yaml).
            links["results"] = {"href": self.results_href}
        doc["_links"] = links
        return doc


class ActivityQueue:
    """Holds every activity of the account and runs the worker that processes them."""

    def __init__(self, pace: Pace, max_queued: int, clock: Callable[[], float] = time.time) -> None:
        self.pace = pace
        self.max_queued = max_queued
        self.clock = clock
        self.by_id: dict[str, Activity] = {}
        self._queue: asyncio.Queue[Activity] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def pending(self) -> int:
        return sum(1 for a in self.by_id.values() if a.state not in TERMINAL)

    def full(self) -> bool:
        return self.pending() >= self.max_queued

    def submit(self, kind: str, work: Work, **extra: Any) -> Activity:
        now = self.clock()
        activity = Activity(str(uuid.uuid4()), kind, work, now, updated_at=now, **extra)
        self.by_id[activity.activity_id] = activity
        self._queue.put_nowait(activity)
        return activity

    def listing(self, state: str | None, limit: int) -> Sequence[Activity]:
        """Newest first, optionally in one state."""
        chosen = [a for a in reversed(self.by_id.values()) if state is None or a.state == state]
        return chosen[:limit]

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for activity in self.by_id.values():
            result[activity.state] = result.get(activity.state, 0) + 1
        return result

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sandbox-activities")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            activity = await self._queue.get()
            try:
                await self._process(activity)
            except Exception as exc:  # one broken activity must not stop the others
                activity.state = "failed"
                activity.completed_at = activity.updated_at = self.clock()
                activity.errors.append(
                    f"The sandbox failed to process the activity: {type(exc).__name__}."
                )

    async def _process(self, activity: Activity) -> None:
        wait = activity.created_at + self.pace.delay - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        began = self.clock()
        activity.state = "processing"
        activity.started_at = activity.updated_at = began
        total = activity.work.total
        # Slices of ~1/20 s of pace (at most BATCH items), so that a slow pace shows
        # percent_done moving, and of at most HOLD seconds of the loop's time: the loop
        # stamps arrivals on the rate window, and held up longer it would stamp requests
        # sent a third of a second apart as arriving together.
        most = max(1, min(BATCH, int(self.pace.items_per_second / 20)))
        step = min(most, FIRST_STEP)
        done = 0
        while done < total:
            end = min(total, done + step)
            if activity.fault is None:
                began_step = time.perf_counter()
                activity.work.apply(activity, done, end)
                spent = time.perf_counter() - began_step
                step = max(1, min(most, int((end - done) * HOLD / spent))) if spent else most
            done = end
            activity.items_completed = done
            activity.percent_done = done * 100 // total
            activity.updated_at = self.clock()
            # Pace: item `done` may finish no earlier than began + done / rate.
            ahead = began + done / max(self.pace.items_per_second, 1e-9) - self.clock()
            await asyncio.sleep(max(ahead, 0))
        now = self.clock()
        activity.updated_at = activity.completed_at = now
        if activity.fault is not None:
            activity.state = activity.fault
            activity.errors.append(
                "The activity failed." if activity.fault == "failed" else "The activity timed out."
            )
            return
        activity.work.finish(activity)
        activity.items_completed = total
        activity.percent_done = 100
        activity.state = "completed"
