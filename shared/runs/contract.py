"""The export run: what the orchestrator, its activities, the runner and the HTTP API share.

Contract changes (newest first; tell the HTTP API's author when adding one):

- Added: incremental runs and mirror mode (issue 7). Two more activities,
  ``find_members`` and ``apply_removals`` (both take the RunInput). ``RunOptions``
  gains ``full`` (send every contact, not only new and changed ones) and
  ``confirm_removals`` (a run stopped for confirmation may remove). A new status,
  ``needs_confirmation``: a mirror run would have removed more than the definition's
  ``max_removal_share`` of a list (or the segment came empty); nothing was sent or
  removed, and starting it again with ``confirm_removals`` goes ahead. ``PreparedRun``
  gains ``changes`` (:class:`Changes`); the report gains ``changes`` and ``removals``.
  A run may have 0 chunks (nothing new or changed): it completes without an import.

- Added (nothing changed): resuming. A run whose report says ``quota_exhausted`` or
  ``completed_with_errors`` may be started again under the SAME run id with the same
  input (a Durable instance that is no longer running may be replaced): what was
  already accepted is not sent again (acceptance marks), only what did not go is.
  The report's ``quota.resets_at`` says when; ``not_delivered.chunks`` says what.

Names. The orchestrator ``segment_export`` (functions/orchestrator.py) calls four
activities (functions/activities.py): ``prepare_segment``, ``upload_chunk``,
``poll_imports`` and ``finish_run``, and in mirror mode ``find_members`` (before any
upload: who is on the lists, what would be removed) and ``apply_removals`` (after the
imports). Both modules hold a ``df.Blueprint``.

Input (:class:`RunInput`, plain JSON; no contact data, no secrets)::

    {"run_id": "high-value-20261128t094500z-3f2a9c",      # also the instance id
     "export": {...ExportDefinition.to_json(), with "name"...},
     "source": "az://inbox/BlobExport/HighValueSegment/2026/11/28/0930",  # or a local path
     "connection": "default",
     "trigger": "blob" | "timer" | "http" | "cli",
     "requested_at": "2026-11-28T09:45:00Z",
     "options": {...}}                                     # optional: RunOptions tuning

Custom status (:meth:`RunTally.progress`), set at every step::

    {"phase": "preparing" | "uploading" | "waiting" | "finishing" | "done",
     "run_id": ..., "status": null until done, then a RunStatus value,
     "chunks_total": n, "chunks_uploaded": n, "chunks_done": n, "chunks_failed": n,
     "contacts_total": n, "contacts_done": n, "polls": n}

``chunks_done`` counts chunks whose import reached a final state (imported or not);
``contacts_done`` the contacts of chunks Constant Contact finished importing;
``contacts_total`` the contacts in chunks (an incremental run sends only new and
changed ones: the report's ``changes`` has the unchanged).

Output (:class:`RunOutcome`)::

    {"run_id", "status", "contacts_total", "contacts_delivered",
     "contacts_not_delivered", "contacts_unconfirmed", "report": "<where report.json is>",
     "resume_after": "2026-11-29T00:00:00Z" | null}

Status values (:class:`RunStatus`): ``completed`` (every contact imported),
``completed_with_errors`` (some chunks or contacts did not go; the others did),
``quota_exhausted`` (the daily request quota ran out; the rest is kept and goes when
the run is started again with the same run id after 00:00 UTC), ``needs_confirmation``
(a mirror run would remove more than ``max_removal_share`` of a list, or its segment
came empty: nothing was sent or removed), ``failed`` (nothing could be sent: the input
or the definition is wrong, or an unexpected error).

The report (report.json, written by ``finish_run``; its fields are documented in
shared/runs/report.py) and the rejects file live in the run store
(shared/runs/store.py): ``CCEXPORT_HOME/runs/<run_id>/`` locally, or the ``reports``
container (chunk bodies in ``staging``) in Blob Storage. ``open_run_store(env)`` picks
the store from settings; ``RunStore.read_report(run_id)`` reads a report back.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.constant_contact.connections import DEFAULT_CONNECTION
from shared.errors import ConfigError
from shared.exports.definitions import ExportDefinition
from shared.exports.definitions import from_json as export_from_json
from shared.prepare.chunks import DEFAULT_MAX_BODY_BYTES, IMPORT_BYTES_LIMIT

ORCHESTRATOR = "segment_export"
PREPARE_SEGMENT = "prepare_segment"
UPLOAD_CHUNK = "upload_chunk"
POLL_IMPORTS = "poll_imports"
FINISH_RUN = "finish_run"
FIND_MEMBERS = "find_members"
APPLY_REMOVALS = "apply_removals"
ACTIVITIES = (PREPARE_SEGMENT, UPLOAD_CHUNK, POLL_IMPORTS, FINISH_RUN, FIND_MEMBERS, APPLY_REMOVALS)

TRIGGERS = frozenset({"blob", "timer", "http", "cli"})
MAX_ACTIVITY_ERRORS = 10
"""Constant Contact's own error lines kept per chunk in the report (it sends up to 100)."""

_RUN_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
TERMINAL_IMPORT_STATES = frozenset({"completed", "cancelled", "failed", "timed_out"})


def check_run_id(run_id: object) -> str:
    """A run id fit for an instance id, a blob prefix and a folder name."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ConfigError(
            f"run id {str(run_id)[:80]!r}: use 1-128 lower-case letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    return run_id


def iso(moment: datetime) -> str:
    """UTC, seconds, 'Z': how every time in inputs, statuses and reports is written."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(export_name: str | None, now: datetime) -> str:
    """A fresh run id for a run started by a person (CLI, HTTP): name, time, random tail."""
    stamp = now.strftime("%Y%m%dt%H%M%Sz")
    return check_run_id(f"{export_name or 'export'}-{stamp}-{secrets.token_hex(3)}")


class RunStatus(StrEnum):
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    QUOTA_EXHAUSTED = "quota_exhausted"
    NEEDS_CONFIRMATION = "needs_confirmation"
    FAILED = "failed"


class Phase(StrEnum):
    PREPARING = "preparing"
    UPLOADING = "uploading"
    WAITING = "waiting"
    FINISHING = "finishing"
    DONE = "done"


class ChunkFate(StrEnum):
    """Where one chunk (one import request body) stands."""

    PENDING = "pending"  # staged, not sent yet
    ACCEPTED = "accepted"  # Constant Contact took the import; it is not finished
    IMPORTED = "imported"  # the import completed
    IMPORT_FAILED = "import_failed"  # the import ended failed, cancelled or timed_out
    UPLOAD_FAILED = "upload_failed"  # the request was refused or kept failing
    NOT_SENT = "not_sent"  # the daily quota ran out before it was sent
    UNCONFIRMED = "unconfirmed"  # accepted, but no final state was seen in time

    @property
    def delivered(self) -> bool:
        return self is ChunkFate.IMPORTED

    @property
    def lost(self) -> bool:
        """Its contacts certainly did not go (the chunk body is kept for a new run)."""
        return self in (ChunkFate.IMPORT_FAILED, ChunkFate.UPLOAD_FAILED, ChunkFate.NOT_SENT)


# --- options and input -----------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """Tuning; the defaults suit Azure and the real API. All optional in the input."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    upload_window: int = 8
    """Uploads in flight at once: host.json's maxConcurrentActivityFunctions. The pacer
    holds the requests themselves to 4 per second."""
    max_pending_imports: int = 500
    """Imports of this run accepted but unfinished before uploads wait for polls: half
    the account's cap of 1,000 queued activities, leaving room for everyone else."""
    poll_seconds: float = 10.0
    """Time between two status polls (each one request for every pending import)."""
    max_wait_seconds: float = 6 * 3600.0
    """How long to wait for imports to finish before reporting them unconfirmed."""
    attempts: int = 3
    """Tries of each activity (Durable retry options), the first included."""
    retry_seconds: float = 15.0
    full: bool = False
    """Send every contact, not only those new or changed since the last snapshot."""
    confirm_removals: bool = False
    """A mirror run may remove more than the definition's max_removal_share."""

    def __post_init__(self) -> None:
        checks = (
            (1024 <= self.max_body_bytes <= IMPORT_BYTES_LIMIT, "max_body_bytes"),
            (1 <= self.upload_window <= 64, "upload_window (1-64)"),
            (self.upload_window <= self.max_pending_imports <= 1000, "max_pending_imports"),
            (0 < self.poll_seconds <= 3600, "poll_seconds"),
            (0 < self.max_wait_seconds <= 10 * 86400, "max_wait_seconds"),
            (1 <= self.attempts <= 10, "attempts (1-10)"),
            (0 < self.retry_seconds <= 3600, "retry_seconds"),
            (isinstance(self.full, bool), "full (true or false)"),
            (isinstance(self.confirm_removals, bool), "confirm_removals (true or false)"),
        )
        for ok, name in checks:
            if not ok:
                raise ConfigError(f"run option {name} is out of range")

    @classmethod
    def from_json(cls, data: Any) -> RunOptions:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError("run options must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown run option(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"run options: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunInput:
    """The orchestrator's input. ``export`` is ``ExportDefinition.to_json()``."""

    run_id: str
    export: Mapping[str, Any]
    source: str
    connection: str = DEFAULT_CONNECTION
    trigger: str = "cli"
    requested_at: str = ""
    options: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        if self.trigger not in TRIGGERS:
            raise ConfigError(f"trigger {self.trigger!r} is not one of {sorted(TRIGGERS)}")
        if not self.source:
            raise ConfigError("a run needs a source (a folder, a file or az://CONTAINER/PATH)")

    def definition(self) -> ExportDefinition:
        return export_from_json(self.export, where=f"run {self.run_id}: export")

    @classmethod
    def create(
        cls,
        run_id: str,
        export: ExportDefinition,
        source: str,
        *,
        connection: str = DEFAULT_CONNECTION,
        trigger: str = "cli",
        requested_at: datetime,
        options: RunOptions | None = None,
    ) -> RunInput:
        return cls(
            run_id=run_id,
            export=export.to_json(),
            source=source,
            connection=connection,
            trigger=trigger,
            requested_at=iso(requested_at),
            options=options or RunOptions(),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "export": dict(self.export),
            "source": self.source,
            "connection": self.connection,
            "trigger": self.trigger,
            "requested_at": self.requested_at,
        }
        if self.options != RunOptions():
            data["options"] = self.options.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any) -> RunInput:
        if not isinstance(data, dict):
            raise ConfigError("a run input must be a JSON object")
        export = data.get("export")
        if not isinstance(export, dict):
            raise ConfigError("a run input needs its export definition under 'export'")
        return cls(
            run_id=data.get("run_id", ""),
            export=export,
            source=str(data.get("source", "")),
            connection=str(data.get("connection") or DEFAULT_CONNECTION),
            trigger=str(data.get("trigger", "cli")),
            requested_at=str(data.get("requested_at", "")),
            options=RunOptions.from_json(data.get("options")),
        )


# --- what the activities take and give ---------------------------------------------------


@dataclass(frozen=True)
class ChunkRef:
    """One staged request body: a name in the run's staging area, and its figures."""

    index: int
    name: str
    contacts: int
    bytes: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChunkRef:
        return cls(int(data["index"]), str(data["name"]), int(data["contacts"]), int(data["bytes"]))


@dataclass(frozen=True)
class Changes:
    """The segment against the export's last snapshot (shared/exports/changes.py)."""

    state_key: str = ""
    mode: str = "add"
    incremental: bool = False
    """A snapshot was there to compare with (and the run was not ``full``)."""
    added: int = 0
    """Contacts not in the last snapshot."""
    updated: int = 0
    """Contacts in it whose mapped values changed."""
    unchanged: int = 0
    """Contacts exactly as last sent: not sent again."""
    left: int = 0
    """Contacts of the last snapshot that are not in this segment."""
    previous_contacts: int = 0
    removal_candidates: int = 0
    """Members this export added that are not in the segment (over its lists): what a
    mirror run would remove, before the lists are looked at."""
    content_unchanged: bool = False
    """The files and the definition are the ones of the last snapshot: nothing was read."""
    needs_members: bool = False
    """A mirror run must look at the lists (new contacts or removal candidates)."""
    sent: int = 0
    """Contacts packed into chunks (new and changed, or all in a full run)."""
    generation: str = ""
    """The generation of the state compared with (shared/exports/state.py)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Changes:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass(frozen=True)
class PreparedRun:
    """``prepare_segment``'s result: references and counts, never contacts.

    ``error`` is set (and ``chunks`` empty) when the input cannot be exported as it
    is: a missing column, an unreadable file. Retrying would not help, so it is a
    result, not a raised error.
    """

    run_id: str
    chunks: tuple[ChunkRef, ...] = ()
    source: str = ""
    staging: str = ""
    rows_read: int = 0
    contacts: int = 0
    duplicates: int = 0
    rejected: int = 0
    reject_reasons: Mapping[str, int] = field(default_factory=dict)
    fewest_chunks_possible: int = 0
    reused: bool = False
    """True when an earlier attempt of this run had already prepared everything."""
    error: str | None = None
    changes: Changes = field(default_factory=Changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunks"] = [asdict(c) for c in self.chunks]
        data["reject_reasons"] = dict(self.reject_reasons)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparedRun:
        values = dict(data)
        values["chunks"] = tuple(ChunkRef.from_json(c) for c in data.get("chunks", ()))
        values["reject_reasons"] = dict(data.get("reject_reasons", {}))
        values["changes"] = Changes.from_json(data.get("changes"))
        return cls(**values)


@dataclass(frozen=True)
class ListPlan:
    """One list of a mirror run: its members, and what leaves it."""

    list_id: str
    members: int = 0
    """Members when looked at (before this run's imports)."""
    remove: int = 0
    """Members this export added that left the segment: to be removed."""
    kept_for_others: int = 0
    """Leavers kept because another export's segment still has them."""

    def share(self) -> float:
        return self.remove / self.members if self.members else 0.0


@dataclass(frozen=True)
class MembersResult:
    """``find_members``'s result: per list, members and planned removals (no contacts)."""

    lists: tuple[ListPlan, ...] = ()
    requests: int = 0
    via: str = ""
    """How the members were found: "contact_export" or "paging"."""
    error: str | None = None
    resets_at: str | None = None

    @property
    def removals(self) -> int:
        return sum(p.remove for p in self.lists)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "lists": [asdict(p) for p in self.lists]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> MembersResult:
        if not data:
            return cls()
        return cls(**{**data, "lists": tuple(ListPlan(**p) for p in data.get("lists", ()))})


@dataclass(frozen=True)
class RemovalResult:
    """``apply_removals``'s result: the membership activities it started (or had)."""

    activity_ids: tuple[str, ...] = ()
    contacts: int = 0
    """Membership removals asked for, over all lists."""
    requests: int = 0
    error: str | None = None
    resets_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "activity_ids": list(self.activity_ids)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RemovalResult:
        if not data:
            return cls()
        return cls(**{**data, "activity_ids": tuple(data.get("activity_ids", ()))})


@dataclass(frozen=True)
class Removals:
    """What became of the removals, for the report and the state."""

    planned: int = 0
    asked: int = 0
    """Membership removals sent to Constant Contact."""
    activities: int = 0
    activities_completed: int = 0
    error: str | None = None

    @property
    def done(self) -> bool:
        return (
            self.error is None
            and self.asked == self.planned
            and self.activities_completed == self.activities
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Removals:
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class UploadRequest:
    run_id: str
    connection: str
    chunk: ChunkRef

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "connection": self.connection, "chunk": asdict(self.chunk)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadRequest:
        return cls(
            check_run_id(data["run_id"]), str(data["connection"]), ChunkRef.from_json(data["chunk"])
        )


class UploadVerdict(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"  # a permanent refusal (4xx): sending it again would not help
    QUOTA_EXHAUSTED = "quota_exhausted"


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

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "connection": self.connection,
            "activity_ids": list(self.activity_ids),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PollRequest:
        ids = data.get("activity_ids", [])
        return cls(check_run_id(data["run_id"]), str(data["connection"]), tuple(map(str, ids)))


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

    def to_json(self) -> dict[str, Any]:
        return {
            "imports": [i.to_json() for i in self.imports],
            "requests": self.requests,
            "error": self.error,
            "resets_at": self.resets_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PollResult:
        return cls(
            imports=tuple(ImportState.from_json(i) for i in data.get("imports", ())),
            requests=int(data.get("requests", 0)),
            error=data.get("error"),
            resets_at=data.get("resets_at"),
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


@dataclass(frozen=True)
class FinishRequest:
    """Everything ``finish_run`` needs to write the report and clean staging."""

    run: RunInput
    status: RunStatus
    started_at: str
    finished_at: str
    prepared: PreparedRun | None
    outcomes: tuple[ChunkOutcome, ...]
    requests: RequestCounts
    error: str | None = None
    resets_at: str | None = None
    members: MembersResult | None = None
    removals: Removals | None = None
    confirmation: str | None = None
    """Why a mirror run stopped to ask (status needs_confirmation)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "members": None if self.members is None else self.members.to_json(),
            "removals": None if self.removals is None else self.removals.to_json(),
            "confirmation": self.confirmation,
            "run": self.run.to_json(),
            "status": self.status.value,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "prepared": None if self.prepared is None else self.prepared.to_json(),
            "outcomes": [o.to_json() for o in self.outcomes],
            "requests": asdict(self.requests),
            "error": self.error,
            "resets_at": self.resets_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FinishRequest:
        prepared = data.get("prepared")
        return cls(
            run=RunInput.from_json(data["run"]),
            status=RunStatus(data["status"]),
            started_at=str(data["started_at"]),
            finished_at=str(data["finished_at"]),
            prepared=None if prepared is None else PreparedRun.from_json(prepared),
            outcomes=tuple(ChunkOutcome.from_json(o) for o in data.get("outcomes", ())),
            requests=RequestCounts(**data.get("requests", {})),
            error=data.get("error"),
            resets_at=data.get("resets_at"),
            members=MembersResult.from_json(data["members"]) if data.get("members") else None,
            removals=Removals.from_json(data["removals"]) if data.get("removals") else None,
            confirmation=data.get("confirmation"),
        )


@dataclass(frozen=True)
class RunOutcome:
    """The orchestrator's output."""

    run_id: str
    status: RunStatus
    contacts_total: int = 0
    contacts_delivered: int = 0
    contacts_not_delivered: int = 0
    contacts_unconfirmed: int = 0
    report: str | None = None
    resume_after: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunOutcome:
        return cls(**{**data, "status": RunStatus(data["status"])})


# --- the orchestrator's bookkeeping -----------------------------------------------------


class RunTally:
    """Where a run stands: one object the orchestrator updates after each step.

    Pure and deterministic (no clock, no I/O), so the orchestrator can rebuild it on
    every replay; it also decides the run's status and what the custom status says.
    """

    def __init__(self, run: RunInput, started_at: str) -> None:
        self.run = run
        self.started_at = started_at
        self.phase = Phase.PREPARING
        self.prepared: PreparedRun | None = None
        self.outcomes: dict[int, ChunkOutcome] = {}
        self.error: str | None = None
        self.resets_at: str | None = None
        self.requests = RequestCounts()
        self.final: RunStatus | None = None
        self.poll_failures = 0
        """Status polls in a row that failed (after their retries)."""
        self.members: MembersResult | None = None
        self.removals: Removals | None = None
        self.removal_states: dict[str, str] = {}
        """Membership removal activity id -> its last known state."""
        self.confirmation: str | None = None

    # -- steps ---------------------------------------------------------------------

    def prepared_run(self, prepared: PreparedRun) -> None:
        self.prepared = prepared
        if prepared.error is not None:
            self.fail(prepared.error)
            return
        self.outcomes = {c.index: ChunkOutcome(c) for c in prepared.chunks}
        self.phase = Phase.UPLOADING

    def fail(self, error: str) -> None:
        self.error = error

    # -- mirror mode -----------------------------------------------------------------

    @property
    def changes(self) -> Changes:
        return self.prepared.changes if self.prepared else Changes()

    def mirror(self) -> bool:
        return self.changes.mode == "mirror"

    def needs_members(self) -> bool:
        """Look at the lists before sending: a mirror run with joiners or leavers."""
        return self.mirror() and self.changes.needs_members and not self.stopped()

    def check_empty_segment(self) -> None:
        """A mirror run whose segment came empty after a non-empty one stops to ask."""
        prepared, changes = self.prepared, self.changes
        if (
            self.mirror()
            and not self.stopped()
            and prepared is not None
            and prepared.contacts == 0
            and changes.previous_contacts > 0
            and not self.run.options.confirm_removals
        ):
            self.confirmation = (
                f"the segment is empty but the last run sent {changes.previous_contacts:,} "
                "contacts: in mirror mode this would remove every member this export added. "
                f"Check the file; to go ahead, {self._confirm_hint()}"
            )

    def members_found(self, result: MembersResult) -> None:
        self.members = result
        if result.resets_at is not None:
            self.quota_exhausted(result.resets_at)
            return
        if result.error is not None:
            self.fail(f"the lists' members could not be read, so nothing was sent: {result.error}")
            return
        limit = self.run.definition().max_removal_share
        over = [p for p in result.lists if p.share() > limit]
        if over and not self.run.options.confirm_removals:
            worst = max(over, key=ListPlan.share)
            self.confirmation = (
                f"this mirror run would remove {worst.remove:,} of the {worst.members:,} "
                f"members of list {worst.list_id} ({worst.share():.0%}), more than the "
                f"{limit:.0%} allowed (max_removal_share): a truncated or wrong file? Nothing "
                f"was sent or removed. To go ahead, {self._confirm_hint()}"
            )

    def _confirm_hint(self) -> str:
        run_id = self.run.run_id
        return (
            f"start run {run_id} again with confirm_removals (ccexport run ... --run-id "
            f'{run_id} --confirm-removals, or POST .../runs with {{"confirm_removals": true}})'
        )

    def awaits_confirmation(self) -> bool:
        return self.confirmation is not None

    def removals_due(self) -> bool:
        return (
            self.members is not None
            and self.members.removals > 0
            and self.removals is None
            and not self.stopped()
            and not self.awaits_confirmation()
        )

    def removals_asked(self, result: RemovalResult) -> None:
        planned = self.members.removals if self.members else 0
        self.removals = Removals(
            planned=planned,
            asked=result.contacts,
            activities=len(result.activity_ids),
            error=result.error,
        )
        self.removal_states = {a: "" for a in result.activity_ids}
        if result.resets_at is not None:
            self.quota_exhausted(result.resets_at)

    def removals_failed(self, error: str) -> None:
        planned = self.members.removals if self.members else 0
        self.removals = Removals(planned, error=error)

    def removals_awaiting(self) -> list[str]:
        return [
            a for a, state in self.removal_states.items() if state not in TERMINAL_IMPORT_STATES
        ]

    def removals_polled(self, result: PollResult) -> None:
        for state in result.imports:
            if state.activity_id in self.removal_states:
                self.removal_states[state.activity_id] = state.state
        if self.removals is not None:
            done = sum(1 for s in self.removal_states.values() if s == "completed")
            failed = [
                s
                for s in self.removal_states.values()
                if s in TERMINAL_IMPORT_STATES - {"completed"}
            ]
            error = self.removals.error or (
                f"{len(failed)} removal activit{'y' if len(failed) == 1 else 'ies'} ended "
                + ", ".join(sorted(set(failed)))
                if failed
                else None
            )
            self.removals = replace(self.removals, activities_completed=done, error=error)

    def removals_unconfirmed(self, why: str) -> None:
        if self.removals is not None and self.removals_awaiting():
            self.removals = replace(self.removals, error=self.removals.error or why)
        self.removal_states = {
            a: (s if s in TERMINAL_IMPORT_STATES else "unconfirmed")
            for a, s in self.removal_states.items()
        }

    def uploaded(self, result: UploadResult) -> None:
        outcome = self.outcomes[result.index]
        self.requests = replace(
            self.requests,
            import_requests=self.requests.import_requests + result.requests,
            import_resends=self.requests.import_resends + result.resends,
        )
        requests = outcome.upload_requests + result.requests
        if result.verdict is UploadVerdict.ACCEPTED:
            self.outcomes[result.index] = replace(
                outcome,
                fate=ChunkFate.ACCEPTED,
                activity_id=result.activity_id,
                already_accepted=result.already_accepted,
                upload_requests=requests,
            )
        elif result.verdict is UploadVerdict.QUOTA_EXHAUSTED:
            self.outcomes[result.index] = replace(
                outcome, fate=ChunkFate.NOT_SENT, upload_requests=requests, error=result.error
            )
            self.quota_exhausted(result.resets_at)
        else:
            self.outcomes[result.index] = replace(
                outcome, fate=ChunkFate.UPLOAD_FAILED, upload_requests=requests, error=result.error
            )

    def upload_failed(self, index: int, error: str) -> None:
        """The upload activity failed for good (after its retries)."""
        self.outcomes[index] = replace(
            self.outcomes[index], fate=ChunkFate.UPLOAD_FAILED, error=error
        )

    def quota_exhausted(self, resets_at: str | None) -> None:
        self.resets_at = resets_at or self.resets_at or "the next 00:00 UTC"
        for index, outcome in self.outcomes.items():
            if outcome.fate is ChunkFate.PENDING:
                self.outcomes[index] = replace(
                    outcome, fate=ChunkFate.NOT_SENT, error="daily request quota exhausted"
                )

    def polled(self, result: PollResult) -> None:
        requests = self.requests
        self.requests = replace(
            requests,
            status_polls=requests.status_polls + 1,
            poll_requests=requests.poll_requests + result.requests,
            polls_in_one_request=requests.polls_in_one_request + (result.requests == 1),
        )
        self.poll_failures = 0
        by_id = {state.activity_id: state for state in result.imports}
        for index, outcome in self.outcomes.items():
            state = by_id.get(outcome.activity_id or "")
            if state is None or outcome.fate is not ChunkFate.ACCEPTED:
                continue
            fate = ChunkFate.ACCEPTED
            error = None
            if state.state == "completed":
                fate = ChunkFate.IMPORTED
            elif state.done:
                fate = ChunkFate.IMPORT_FAILED
                error = f"the import ended {state.state}"
            self.outcomes[index] = replace(outcome, fate=fate, import_state=state, error=error)
        if result.resets_at is not None:
            self.quota_exhausted(result.resets_at)

    def poll_failed(self) -> None:
        """A status poll failed for good; the imports may still be running."""
        self.poll_failures += 1
        self.requests = replace(self.requests, status_polls=self.requests.status_polls + 1)

    def stop_waiting(self, why: str) -> None:
        """No more polls: imports still running are reported unconfirmed."""
        for index, outcome in self.outcomes.items():
            if outcome.fate is ChunkFate.ACCEPTED:
                self.outcomes[index] = replace(outcome, fate=ChunkFate.UNCONFIRMED, error=why)

    # -- questions -----------------------------------------------------------------

    def stopped(self) -> bool:
        """Nothing more may be sent: the input failed or the quota is gone."""
        return self.error is not None or self.resets_at is not None

    def pending_chunks(self) -> list[ChunkRef]:
        return [o.chunk for o in self.outcomes.values() if o.fate is ChunkFate.PENDING]

    def awaiting(self) -> list[str]:
        """Activity ids of accepted imports that have not finished."""
        return [
            o.activity_id
            for o in self.outcomes.values()
            if o.fate is ChunkFate.ACCEPTED and o.activity_id is not None
        ]

    def _contacts(self, chunks: Iterable[ChunkOutcome]) -> int:
        return sum(o.chunk.contacts for o in chunks)

    def status(self) -> RunStatus:
        outcomes = list(self.outcomes.values())
        went = [o for o in outcomes if not o.fate.lost and o.fate is not ChunkFate.PENDING]
        if self.resets_at is not None:
            return RunStatus.QUOTA_EXHAUSTED
        if self.confirmation is not None:
            return RunStatus.NEEDS_CONFIRMATION
        if self.removals is not None and not self.removals.done:
            return (
                RunStatus.COMPLETED_WITH_ERRORS if went or self.removals.asked else RunStatus.FAILED
            )
        if not went and (self.error is not None or outcomes):
            return RunStatus.FAILED  # nothing was sent, or everything sent was refused
        if self.error is not None or any(not o.fate.delivered or o.shortfall for o in outcomes):
            return RunStatus.COMPLETED_WITH_ERRORS
        return RunStatus.COMPLETED

    def progress(self) -> dict[str, Any]:
        """The custom status."""
        outcomes = list(self.outcomes.values())
        final = {ChunkFate.IMPORTED, ChunkFate.IMPORT_FAILED}
        failed = [o for o in outcomes if o.fate.lost or o.fate is ChunkFate.UNCONFIRMED]
        return {
            "phase": self.phase.value,
            "run_id": self.run.run_id,
            "status": None if self.final is None else self.final.value,
            "chunks_total": len(outcomes),
            "chunks_uploaded": sum(1 for o in outcomes if o.activity_id is not None),
            "chunks_done": sum(1 for o in outcomes if o.fate in final),
            "chunks_failed": len(failed),
            "contacts_total": self._contacts(outcomes),  # to send: unchanged ones are not
            "contacts_done": self._contacts(o for o in outcomes if o.fate.delivered),
            "polls": self.requests.status_polls,
        }

    def finish_request(self, finished_at: str) -> FinishRequest:
        if self.confirmation is not None:
            for index, outcome in self.outcomes.items():
                if outcome.fate is ChunkFate.PENDING:
                    why = "not sent: the run waits for confirmation"
                    self.outcomes[index] = replace(outcome, error=why)
        self.final = self.status()
        self.phase = Phase.FINISHING
        return FinishRequest(
            run=self.run,
            status=self.final,
            started_at=self.started_at,
            finished_at=finished_at,
            prepared=self.prepared,
            outcomes=tuple(self.outcomes[i] for i in sorted(self.outcomes)),
            requests=self.requests,
            error=self.error,
            resets_at=self.resets_at,
            members=self.members,
            removals=self.removals,
            confirmation=self.confirmation,
        )

    def outcome(self, report: str | None) -> RunOutcome:
        self.phase = Phase.DONE
        outcomes = list(self.outcomes.values())
        status = self.final or self.status()
        short = sum(o.shortfall for o in outcomes)
        return RunOutcome(
            run_id=self.run.run_id,
            status=status,
            contacts_total=self.prepared.contacts if self.prepared else 0,
            contacts_delivered=self._contacts(o for o in outcomes if o.fate.delivered) - short,
            contacts_not_delivered=self._contacts(o for o in outcomes if o.fate.lost) + short,
            contacts_unconfirmed=self._contacts(
                o for o in outcomes if o.fate in (ChunkFate.UNCONFIRMED, ChunkFate.ACCEPTED)
            ),
            report=report,
            resume_after=self.resets_at if status is RunStatus.QUOTA_EXHAUSTED else None,
        )
