"""What ``upload_chunk`` and ``poll_imports`` take and give, and each chunk's fate.

Every chunk ends in one ``ChunkFate``; the report and the run's status are told from
those fates. Transient failures are raised by the activities (Durable retries them);
what retrying would not change comes back as a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from shared.runs.grants import RunScope
from shared.runs.ids import check_run_id
from shared.runs.prepared import ChunkRef

MAX_ACTIVITY_ERRORS = 10
"""Constant Contact's own error lines kept per chunk in the report (it sends up to 100)."""
TERMINAL_IMPORT_STATES = frozenset({"completed", "cancelled", "failed", "timed_out"})


class ChunkFate(StrEnum):
    """Where one chunk (one import request body) stands."""

    PENDING = "pending"  # staged, not sent yet
    ACCEPTED = "accepted"  # Constant Contact took the import; it is not finished
    IMPORTED = "imported"  # the import completed
    IMPORT_FAILED = "import_failed"  # the import ended failed, cancelled or timed_out
    UPLOAD_FAILED = "upload_failed"  # the request was refused or kept failing
    NOT_SENT = "not_sent"  # the daily quota ran out, or the run was stopped, before it was sent
    UNCONFIRMED = "unconfirmed"  # accepted, but no final state was seen in time

    @property
    def delivered(self) -> bool:
        return self is ChunkFate.IMPORTED

    @property
    def lost(self) -> bool:
        """Its contacts certainly did not go (the chunk body is kept for a new run)."""
        return self in (ChunkFate.IMPORT_FAILED, ChunkFate.UPLOAD_FAILED, ChunkFate.NOT_SENT)


def _scope_json(scope: RunScope | None) -> dict[str, Any]:
    return {} if scope is None else {"scope": scope.to_json()}


@dataclass(frozen=True)
class UploadRequest:
    run_id: str
    connection: str
    chunk: ChunkRef
    scope: RunScope | None = None
    """What the activity checks before it sends (shared/runs/recheck.py)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "connection": self.connection,
            "chunk": asdict(self.chunk),
            **_scope_json(self.scope),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadRequest:
        return cls(
            check_run_id(data["run_id"]),
            str(data["connection"]),
            ChunkRef.from_json(data["chunk"]),
            RunScope.from_json(data.get("scope")),
        )


class UploadVerdict(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"  # a permanent refusal (4xx): sending it again would not help
    QUOTA_EXHAUSTED = "quota_exhausted"
    STOPPED = "stopped"  # the run's grant no longer holds (shared/runs/recheck.py): nothing sent


@dataclass(frozen=True)
class UploadResult:
    """``upload_chunk``'s result. Transient failures are raised instead (Durable retries)."""

    index: int
    verdict: UploadVerdict
    activity_id: str | None = None
    already_accepted: bool = False
    """The chunk's import had been accepted by an earlier attempt: nothing was sent."""
    requests: int = 0
    resends: int = 0
    error: str | None = None
    resets_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadResult:
        return cls(**{**data, "verdict": UploadVerdict(data["verdict"])})


@dataclass(frozen=True)
class PollRequest:
    run_id: str
    connection: str
    activity_ids: tuple[str, ...]
    scope: RunScope | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "connection": self.connection,
            "activity_ids": list(self.activity_ids),
            **_scope_json(self.scope),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PollRequest:
        ids = data.get("activity_ids", [])
        return cls(
            check_run_id(data["run_id"]),
            str(data["connection"]),
            tuple(map(str, ids)),
            RunScope.from_json(data.get("scope")),
        )


@dataclass(frozen=True)
class ImportState:
    """One import activity as Constant Contact last described it (emails scrubbed)."""

    activity_id: str
    state: str
    percent_done: int = 0
    items_total_count: int = 0
    person_count: int = 0
    error_count: int = 0
    correctable_count: int = 0
    cannot_add_to_list_count: int = 0
    activity_errors: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_IMPORT_STATES

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["activity_errors"] = list(self.activity_errors)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImportState:
        return cls(**{**data, "activity_errors": tuple(data.get("activity_errors", ()))})


@dataclass(frozen=True)
class PollResult:
    """``poll_imports``'s result: every asked import it could see, in one go."""

    imports: tuple[ImportState, ...] = ()
    requests: int = 0
    """HTTP requests this poll made; 1 when one listing covered every pending import."""
    error: str | None = None
    resets_at: str | None = None
    """Set when the daily quota ran out: no status can be read before it resets."""
    stopped: bool = False
    """The run's grant no longer holds (``error`` says why): nothing was asked."""

    def to_json(self) -> dict[str, Any]:
        return {
            "imports": [i.to_json() for i in self.imports],
            "requests": self.requests,
            "error": self.error,
            "resets_at": self.resets_at,
            "stopped": self.stopped,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PollResult:
        return cls(
            imports=tuple(ImportState.from_json(i) for i in data.get("imports", ())),
            requests=int(data.get("requests", 0)),
            error=data.get("error"),
            resets_at=data.get("resets_at"),
            stopped=data.get("stopped") is True,
        )


@dataclass(frozen=True)
class ChunkOutcome:
    """One chunk's story, as the report tells it."""

    chunk: ChunkRef
    fate: ChunkFate = ChunkFate.PENDING
    activity_id: str | None = None
    already_accepted: bool = False
    upload_requests: int = 0
    import_state: ImportState | None = None
    error: str | None = None

    @property
    def shortfall(self) -> int:
        """Contacts sent that the completed import does not account for (0 if none)."""
        if self.fate is not ChunkFate.IMPORTED or self.import_state is None:
            return 0
        state = self.import_state
        return max(0, self.chunk.contacts - state.person_count)

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk": asdict(self.chunk),
            "fate": self.fate.value,
            "activity_id": self.activity_id,
            "already_accepted": self.already_accepted,
            "upload_requests": self.upload_requests,
            "import_state": None if self.import_state is None else self.import_state.to_json(),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChunkOutcome:
        state = data.get("import_state")
        return cls(
            chunk=ChunkRef.from_json(data["chunk"]),
            fate=ChunkFate(data["fate"]),
            activity_id=data.get("activity_id"),
            already_accepted=bool(data.get("already_accepted", False)),
            upload_requests=int(data.get("upload_requests", 0)),
            import_state=None if state is None else ImportState.from_json(state),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class RequestCounts:
    """What the run asked of Constant Contact (for the report and the benchmark)."""

    import_requests: int = 0
    """Import POSTs sent, resends after connection errors included."""
    import_resends: int = 0
    status_polls: int = 0
    """``poll_imports`` calls; each asks about every pending import at once."""
    poll_requests: int = 0
    """HTTP requests those polls made (equal to status_polls when each took one)."""
    polls_in_one_request: int = 0
    member_requests: int = 0
    """Mirror mode: requests that read the lists' members."""
    removal_requests: int = 0
    """Mirror mode: membership removal requests."""
    removal_poll_requests: int = 0
    """Mirror mode: requests of the removals' status polls."""

    @property
    def total(self) -> int:
        """Every request the run's activities counted (what its estimate is told against)."""
        return (
            self.import_requests
            + self.poll_requests
            + self.member_requests
            + self.removal_requests
            + self.removal_poll_requests
        )
