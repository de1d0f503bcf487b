"""A scripted account for replaying segment_export (tests/test_segment_export_replay.py,
and tests/test_mirror_replay.py, which teaches it the mirror activities): the four
activities answer as the real ones do (shared/runs/contract.py payloads), and each of
its fields drives one branch of the orchestrator: a failed chunk, a failed import, the
daily quota (spent mid-run, or short before the run sends), slow imports, polls that
fail."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.runs.contract import FinishRequest, RunInput
from shared.runs.prepared import ChunkRef, PreparedRun
from shared.runs.quota_plan import KeyDay
from shared.runs.uploads import ImportState, PollResult, UploadRequest, UploadResult, UploadVerdict
from tests.support.durable_history import Clock


class UploadBroke(Exception):
    """A connection error that outlasted the client's retries."""


@dataclass
class Account:
    """Constant Contact and the run store, as the four activities would see them."""

    chunks: int = 5
    contacts_each: int = 100
    broken: set[int] = field(default_factory=set)  # uploads that always raise
    refused: set[int] = field(default_factory=set)  # uploads answered 400
    failing_imports: set[int] = field(default_factory=set)  # imports that end failed
    quota_from: int | None = None  # the upload of this chunk finds the quota gone
    polls_to_finish: int = 1  # polls before an import reports completed
    short: dict[int, int] = field(default_factory=dict)  # chunk -> contacts not counted
    failing_polls: int = 0  # the first N poll attempts raise
    prepare_error: str | None = None
    marks: dict[int, str] = field(default_factory=dict)
    sent: list[int] = field(default_factory=list)
    polls: list[list[str]] = field(default_factory=list)
    poll_attempts: int = 0
    finished: list[FinishRequest] = field(default_factory=list)
    daily_quota: int = 10_000
    left: list[int] = field(default_factory=list)
    """What ``quota_left`` answers is left of the key's day, in turn (the last again and
    again); nothing scripted: the whole quota."""
    clock: Clock = field(default_factory=Clock)
    """The simulated time (run_by_replay's ``clock``): the day and its reset are told from it."""
    key_days: list[KeyDay] = field(default_factory=list)

    def prepare_segment(self, data: Mapping[str, Any]) -> dict[str, Any]:
        run = RunInput.from_json(data)
        if self.prepare_error is not None:
            return PreparedRun(run.run_id, error=self.prepare_error).to_json()
        chunks = tuple(
            ChunkRef(i, f"chunks/chunk-{i:05d}.json", self.contacts_each, 20_000)
            for i in range(1, self.chunks + 1)
        )
        total = self.chunks * self.contacts_each
        return PreparedRun(
            run.run_id,
            chunks=chunks,
            source=run.source,
            staging=f"az://staging/{run.run_id}",
            rows_read=total + 3,
            contacts=total,
            duplicates=1,
            rejected=2,
            reject_reasons={"invalid_email": 2},
            fewest_chunks_possible=self.chunks,
        ).to_json()

    def upload_chunk(self, data: Mapping[str, Any]) -> dict[str, Any]:
        index = UploadRequest.from_json(data).chunk.index
        if index in self.marks:
            return UploadResult(
                index, UploadVerdict.ACCEPTED, self.marks[index], already_accepted=True
            ).to_json()
        if self.quota_from is not None and index >= self.quota_from:
            return UploadResult(
                index,
                UploadVerdict.QUOTA_EXHAUSTED,
                requests=1,
                error="daily quota exhausted, resumes after 00:00 UTC",
                resets_at="2026-11-29T00:00:00Z",
            ).to_json()
        if index in self.broken:
            raise UploadBroke(f"chunk {index}: connection reset")
        self.sent.append(index)
        if index in self.refused:
            return UploadResult(index, UploadVerdict.REFUSED, requests=1, error="400 bad").to_json()
        self.marks[index] = f"activity-{index}"
        return UploadResult(
            index, UploadVerdict.ACCEPTED, f"activity-{index}", requests=1
        ).to_json()

    def poll_imports(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self.poll_attempts += 1
        if self.poll_attempts <= self.failing_polls:
            raise ConnectionError("status poll failed")
        ids = list(data["activity_ids"])
        self.polls.append(ids)
        done = len(self.polls) >= self.polls_to_finish
        states = []
        for activity_id in ids:
            index = int(activity_id.rsplit("-", 1)[1])
            state = "processing"
            if done:
                state = "failed" if index in self.failing_imports else "completed"
            counted = self.contacts_each - self.short.get(index, 0) if state == "completed" else 0
            states.append(ImportState(activity_id, state, person_count=counted))
        return PollResult(imports=tuple(states), requests=1).to_json()

    def quota_left(self, data: Mapping[str, Any]) -> dict[str, Any]:
        now = self.clock.now.astimezone(UTC)
        reset = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        left = self.left[min(len(self.key_days), len(self.left) - 1)] if self.left else None
        left = self.daily_quota if left is None else left
        day = KeyDay(
            day=now.strftime("%Y-%m-%d"),
            used=self.daily_quota - left,
            limit=self.daily_quota,
            left=left,
            resets_at=reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
            resets_in=(reset - now).total_seconds(),
        )
        self.key_days.append(day)
        return day.to_json()

    def finish_run(self, data: Mapping[str, Any]) -> dict[str, Any]:
        request = FinishRequest.from_json(data)
        self.finished.append(request)
        return {"report": f"az://reports/{request.run.run_id}/report.json"}

    def __call__(self, name: str, input_: Any) -> Any:
        handler = getattr(self, name)
        return handler(input_)
