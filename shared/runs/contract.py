"""The export run's contract: what the orchestrator, its activities, the runner and the
HTTP API exchange, as plain JSON (no contact data, no secrets).

Names. The orchestrator ``segment_export`` calls the activities ``prepare_segment``,
``upload_chunk``, ``poll_imports`` and ``finish_run``, and in mirror mode
``find_members`` (before any upload) and ``apply_removals`` (after the imports); before
it sends, ``quota_left`` (the API key's day: shared/runs/quota_plan.py). What each
activity gives back is in ``prepared``, ``uploads``, ``membership`` and
``quota_plan``; the orchestrator's own tally is ``bookkeeping.RunTally``.

Input (:class:`RunInput`; its ``run_id`` is also the instance id)::

    {"run_id": "high-value-20261128t094500z-3f2a9c",
     "export": {...ExportDefinition.to_json(), with "name"...},
     "source": "az://inbox/BlobExport/HighValueSegment/2026/11/28/0930",  # or a local path
     "connection": "default",
     "trigger": "blob" | "timer" | "http" | "cli",
     "requested_at": "2026-11-28T09:45:00Z",
     "grant": {...RunGrant.to_json()...},                 # the function app's runs
     "options": {...}}                                     # optional: RunOptions tuning

``grant`` (shared/runs/grants.py) says who started the run and with which
connection id; the function app's activities check it against the catalog before
each step and stop the run when it no longer holds. ``ccexport run`` has none.

A run that waits long continues as new (``RunOptions.restart_after_tasks``): the
next generation of the same instance gets the same input plus ``"carry"``, the
orchestrator's tally (``RunTally.to_json``: stage, outcomes, counts, deadlines), and
goes on from there without preparing or uploading again. Only the orchestrator
writes and reads ``carry``.

Custom status (``RunTally.progress``), set at every step::

    {"phase": "preparing" | "waiting_for_quota" | "uploading" | "waiting" | "finishing"
              | "done",
     "run_id": ..., "status": null until done, then a RunStatus value,
     "chunks_total": n, "chunks_uploaded": n, "chunks_done": n, "chunks_failed": n,
     "contacts_total": n, "contacts_sent": n, "contacts_done": n, "polls": n,
     "started_at": "<when the run's first generation started>",
     "requests_estimated": n | null, "resumes_at": "2026-11-29T00:00:01Z" | null}

``requests_estimated`` is the run's estimate of its requests (shared/runs/estimate.py),
told once it has prepared; ``resumes_at`` is set while the phase is
``waiting_for_quota``: what is left of the API key's day cannot carry the estimate, so
nothing is sent until the run's timer fires then, just after the next 00:00 UTC; it
asks again and sends (or waits for the next reset, when other runs took the day).

``chunks_done`` counts chunks whose import reached a final state (imported or not);
``contacts_sent`` the contacts of chunks Constant Contact accepted;
``contacts_done`` the contacts of chunks Constant Contact finished importing;
``contacts_total`` the contacts in chunks (an incremental run sends only new and
changed ones: the report's ``changes`` has the unchanged).

Output (:class:`RunOutcome`)::

    {"run_id", "status", "contacts_total", "contacts_delivered",
     "contacts_not_delivered", "contacts_unconfirmed", "report": "<where report.json is>",
     "resume_after": "2026-11-29T00:00:00Z" | null}

Status values (:class:`RunStatus`): ``completed`` (every contact imported),
``completed_with_errors`` (some chunks or contacts did not go; the others did),
``quota_exhausted`` (the daily request quota ran out; ``resume_after`` says when it
resets), ``needs_confirmation`` (a mirror run would remove more than
``max_removal_share`` of a list, or its segment came empty: nothing was sent or
removed; starting it again with ``confirm_removals`` goes ahead), ``stopped`` (the
run's grant no longer held at one of its steps, shared/runs/recheck.py: its export or
connection was removed, re-created or changed; nothing more was sent, and what went
stays delivered), ``failed`` (nothing
could be sent: the input or the definition is wrong, or an unexpected error).

A run that ended ``quota_exhausted`` or ``completed_with_errors`` may be started again
under the same run id with the same input: what Constant Contact already accepted is
not sent again, only what did not go (the report's ``not_delivered.chunks``).

The report (``report.json``, written by ``finish_run``; its fields are documented in
the ``report`` module) and the rejects file live in the run store (``store``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.constant_contact.connections import DEFAULT_CONNECTION
from shared.errors import ConfigError
from shared.exports.definitions import ExportDefinition
from shared.exports.definitions import from_json as export_from_json
from shared.prepare.chunks import DEFAULT_MAX_BODY_BYTES, IMPORT_BYTES_LIMIT
from shared.runs.grants import RunGrant, RunScope
from shared.runs.ids import check_run_id, iso
from shared.runs.membership import MembersResult, Removals
from shared.runs.prepared import PreparedRun
from shared.runs.quota_plan import QuotaPlan
from shared.runs.uploads import ChunkOutcome, RequestCounts

ORCHESTRATOR = "segment_export"
PREPARE_SEGMENT = "prepare_segment"
UPLOAD_CHUNK = "upload_chunk"
POLL_IMPORTS = "poll_imports"
FINISH_RUN = "finish_run"
FIND_MEMBERS = "find_members"
APPLY_REMOVALS = "apply_removals"
QUOTA_LEFT = "quota_left"
ACTIVITIES = (
    PREPARE_SEGMENT,
    UPLOAD_CHUNK,
    POLL_IMPORTS,
    FINISH_RUN,
    FIND_MEMBERS,
    APPLY_REMOVALS,
    QUOTA_LEFT,
)

TRIGGERS = frozenset({"blob", "timer", "http", "cli"})

CARRY = "carry"
"""The input key under which a continued generation finds the tally it goes on from."""


class RunStatus(StrEnum):
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    QUOTA_EXHAUSTED = "quota_exhausted"
    NEEDS_CONFIRMATION = "needs_confirmation"
    STOPPED = "stopped"
    FAILED = "failed"


def status_in(*documents: object) -> str | None:
    """The run status the first of ``documents`` that says one says (a report, the
    orchestrator's output, its custom status: each carries ``status``), or None."""
    for document in documents:
        if isinstance(document, Mapping) and isinstance(document.get("status"), str):
            return str(document["status"])
    return None


class Phase(StrEnum):
    PREPARING = "preparing"
    WAITING_FOR_QUOTA = "waiting_for_quota"
    UPLOADING = "uploading"
    WAITING = "waiting"
    FINISHING = "finishing"
    DONE = "done"


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
    """Time before the first status poll of a wait (each poll is one request for every
    pending import); later polls back off from it (shared/runs/waits.py)."""
    max_poll_seconds: float = 300.0
    """The longest time between two status polls, however long the wait: at five
    minutes a six-hour wait costs well under a hundred requests of the key's daily
    quota, and an import's end is seen at most five minutes late."""
    max_wait_seconds: float = 6 * 3600.0
    """How long to wait for imports to finish before reporting them unconfirmed."""
    attempts: int = 3
    """Tries of each activity (Durable retry options), the first included."""
    retry_seconds: float = 15.0
    full: bool = False
    """Send every contact, not only those new or changed since the last snapshot."""
    confirm_removals: bool = False
    """A mirror run may remove more than the definition's max_removal_share."""
    restart_after_tasks: int = 100
    """Activities and timers one generation of the orchestration schedules before,
    at its next upload window or poll, it continues as new carrying its tally: its
    history stays small however long it waits (shared/runs/waits.py)."""

    def __post_init__(self) -> None:
        checks = (
            (1024 <= self.max_body_bytes <= IMPORT_BYTES_LIMIT, "max_body_bytes"),
            (1 <= self.upload_window <= 64, "upload_window (1-64)"),
            (self.upload_window <= self.max_pending_imports <= 1000, "max_pending_imports"),
            (0 < self.poll_seconds <= 3600, "poll_seconds"),
            (0 < self.max_poll_seconds <= 3600, "max_poll_seconds"),
            (0 < self.max_wait_seconds <= 10 * 86400, "max_wait_seconds"),
            (1 <= self.attempts <= 10, "attempts (1-10)"),
            (0 < self.retry_seconds <= 3600, "retry_seconds"),
            (isinstance(self.full, bool), "full (true or false)"),
            (isinstance(self.confirm_removals, bool), "confirm_removals (true or false)"),
            (1 <= self.restart_after_tasks <= 10_000, "restart_after_tasks (1-10,000)"),
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
    grant: RunGrant | None = None

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        if self.trigger not in TRIGGERS:
            raise ConfigError(f"trigger {self.trigger!r} is not one of {sorted(TRIGGERS)}")
        if not self.source:
            raise ConfigError("a run needs a source (a folder, a file or az://CONTAINER/PATH)")

    def definition(self) -> ExportDefinition:
        return export_from_json(self.export, where=f"run {self.run_id}: export")

    @property
    def scope(self) -> RunScope | None:
        """What the function app's activities check before each step (None without a
        grant: the command line's runs, which a person started on their own machine)."""
        if self.grant is None:
            return None
        name = self.export.get("name")
        return RunScope(
            export=name if isinstance(name, str) else "",
            source=self.source,
            connection=self.connection,
            trigger=self.trigger,
            grant=self.grant,
        )

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
        grant: RunGrant | None = None,
    ) -> RunInput:
        return cls(
            run_id=run_id,
            export=export.to_json(),
            source=source,
            connection=connection,
            trigger=trigger,
            requested_at=iso(requested_at),
            options=options or RunOptions(),
            grant=grant,
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
        if self.grant is not None:
            data["grant"] = self.grant.to_json()
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
            grant=None if data.get("grant") is None else RunGrant.from_json(data["grant"]),
        )


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
    plan: QuotaPlan | None = None
    """The run's estimate of its requests and what it found of the key's day."""

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": None if self.plan is None else self.plan.to_json(),
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
            plan=QuotaPlan.from_json(data.get("plan")),
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
