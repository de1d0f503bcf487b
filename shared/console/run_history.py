"""The runs page: recent runs, of every export the caller may use or of one.

Which runs a caller sees is shared.runs.access's ``visible_runs``, as for
``GET /api/runs``; here is only what a line shows: the export, when the run was
started and by what, and its status in words (from its Durable status: the list does
not read every report).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.console.run_view import TRIGGERS, RunState, Verdict, verdict
from shared.console.wording import when
from shared.runs.index import RunRecord


@dataclass(frozen=True)
class RunLine:
    record: RunRecord
    state: RunState

    @property
    def started(self) -> str:
        return when(self.record.requested_at)

    @property
    def trigger(self) -> str:
        return TRIGGERS.get(self.record.trigger, self.record.trigger)

    @property
    def status(self) -> Verdict:
        return verdict(self.state)


@dataclass(frozen=True)
class History:
    lines: tuple[RunLine, ...]
    export: str | None
    """The export the list is of; None for every export the caller may use."""
    exports: tuple[str, ...]
    """The exports the caller may filter by."""
    limit: int
    """How many runs were asked for: a full page may have more."""

    @property
    def full(self) -> bool:
        return len(self.lines) >= self.limit
