"""What the export run's four activities do; functions/activities.py only binds them.

The same object serves Azure Functions (built once per worker from its app settings)
and ``ccexport run`` (built from the environment, registered on the local engine),
so the code that touches files, blobs and Constant Contact is the same in both.

What each activity promises, so Durable's retries stay safe:

- ``prepare_segment`` writes the run's staging area whole or not at all; when an
  earlier attempt of the run finished it, the staged result is used as it is. Input
  a person must fix is a result (``error``), not an exception: retrying cannot help.
- ``upload_chunk`` sends one staged body and records the accepted import's activity
  id beside it; an upload that finds that record sends nothing. A refusal that a
  retry cannot cure (4xx, a connection that needs reconnecting) and an exhausted daily
  quota are results; connection errors and 5xx that outlast the client's own retries
  are raised, for Durable to retry.
- ``poll_imports`` asks about every pending import with one request where it can.
- ``finish_run`` writes the report, deletes delivered bodies, and keeps the rest (and
  the marks of accepted imports) so the run can be started again with the same id;
  then it logs the run's one outcome record, ``run finished`` (shared/runs/outcome.py).
  It also writes the export's next state (shared/runs/next_state.py) when the run earned it.
- ``find_members`` (mirror mode) reads the lists' members in bulk and stages the
  removal plan (shared/runs/mirror.py); a retry decides again from the same inputs.
- ``apply_removals`` sends the plan's membership removals and records the activity
  ids; a retry that finds the record sends nothing (removing twice would be harmless).
- ``quota_left`` reads the API key's day from the pacer's shared record (no request to
  Constant Contact): what is left of the daily quota and when it resets
  (shared/runs/quota_plan.py). It changes nothing, so a retry is a read again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from azure.core.exceptions import AzureError

from shared.config import Settings
from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.connect import Connections
from shared.constant_contact.models import Activity
from shared.constant_contact.pacing import Pacer, Usage
from shared.constant_contact.tokens import TokenManager
from shared.constant_contact.transport import RetryPolicy, scrub
from shared.errors import (
    InputError,
    QuotaExhausted,
    ReauthorizationRequired,
    RemoteError,
    ThrottledGiveUp,
)
from shared.exports.account import ConnectionsFactory
from shared.exports.changes import SNAPSHOT_FILE
from shared.exports.definitions import list_names
from shared.exports.state import (
    EMPTY,
    ExportState,
    StateError,
    StateStore,
    definition_hash,
    load,
    others_sharing,
    union,
)
from shared.prepare.pipeline import prepare
from shared.prepare.summary import PrepareSummary
from shared.runs.contract import FinishRequest, RunInput, RunStatus
from shared.runs.grants import RunScope, RunStopped
from shared.runs.membership import MembersResult, RemovalResult
from shared.runs.mirror import (
    PLAN_FILE,
    ListChanges,
    list_members,
    plan_list,
    read_plan,
    write_plan,
)
from shared.runs.next_state import (
    baseline,
    changes_json,
    finish_state,
    retried,
    skip_unchanged,
)
from shared.runs.outcome import log_run_finished
from shared.runs.prepared import Changes, ChunkRef, PreparedRun
from shared.runs.quota_plan import KeyDay
from shared.runs.report import build_report
from shared.runs.step_spans import traced
from shared.runs.store import RunStore, state_store_for
from shared.runs.uploads import (
    MAX_ACTIVITY_ERRORS,
    ChunkFate,
    ImportState,
    PollRequest,
    PollResult,
    UploadRequest,
    UploadResult,
    UploadVerdict,
)
from shared.secrets.store import SecretStore
from shared.segments import layout as segments
from shared.storage import files
from shared.storage.locks import Locks
from shared.storage.slots import MachineSlots, machine_cores
from shared.telemetry import meters

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

    from shared.exports.definitions import ExportDefinition
    from shared.runs.recheck import RunGate

log = logging.getLogger(__name__)

REMOVALS_MARK = "removals.json"

RowsCallback = Callable[[str, int], None]
"""Told ``(run_id, rows read so far)`` while a segment is prepared (local progress bars)."""

# Statuses that a retry cannot change: the request itself is wrong, or not allowed.
_PERMANENT = frozenset({400, 401, 403, 404, 405, 409, 413, 415, 422})


@dataclass(frozen=True)
class Refusal:
    """An answer from Constant Contact that ends an activity with a result: retrying
    cannot help (the request is wrong, the connection needs reconnecting) or must wait
    for the daily reset (``resets_at``)."""

    error: str
    resets_at: str | None = None

    @property
    def quota(self) -> bool:
        return self.resets_at is not None


RefusalOrRetry = QuotaExhausted | ReauthorizationRequired | RemoteError
"""What an activity's Constant Contact calls may raise: sorted by :func:`refusal`."""


def refusal(exc: RefusalOrRetry) -> Refusal:
    """The refusal ``exc`` is, as an activity's result; anything a retry may cure (a
    connection error, a 5xx, 429s that outlasted the client's own retries) is raised
    again, for Durable to retry the activity."""
    if isinstance(exc, QuotaExhausted):
        return Refusal(str(exc), exc.resets_at)
    if isinstance(exc, ReauthorizationRequired):
        return Refusal(str(exc))
    if exc.status in _PERMANENT and not isinstance(exc, ThrottledGiveUp):
        return Refusal(str(exc))
    raise exc


@dataclass
class RunServices:
    """Everything the activities use, built once per process by shared.wiring.run_services."""

    settings: Settings
    runs: RunStore
    blob_service: BlobServiceClient | None
    secrets: SecretStore
    locks: Locks
    pacer: Pacer
    connections: ConnectionsFactory
    """The connections' token managers, made on first use (shared.wiring.connections)."""
    gate: RunGate | None = None
    """The function app's check before each step (shared/runs/recheck.py); None on the
    command line, where the person names the folder and holds the tokens."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prepare_slots: MachineSlots = field(
        default_factory=lambda: MachineSlots("prepare", max(1, machine_cores() - 1))
    )
    """How many prepares this machine runs at once, whatever their processes: one a
    core but one (at least one), the last left to the senders. Prepare is bound by the
    CPU, so more side by side only makes all of them late (and none sends before it
    ends) and adds their memory up."""


def _prepared(run_id: str, summary: PrepareSummary, staging: str, reused: bool) -> PreparedRun:
    chunks = tuple(
        ChunkRef(index, c.name, c.contacts, c.bytes)
        for index, c in enumerate(summary.chunk_files, start=1)
    )
    return PreparedRun(
        run_id=run_id,
        chunks=chunks,
        source=summary.source,
        staging=staging,
        rows_read=summary.rows_read,
        contacts=summary.contacts,
        duplicates=summary.duplicates,
        rejected=summary.rejected,
        reject_reasons=dict(summary.reject_reasons),
        fewest_chunks_possible=summary.fewest_chunks_possible,
        reused=reused,
        changes=Changes.from_json(summary.changes),
    )


def import_state(activity: Activity) -> ImportState:
    """An import as the report keeps it: counts, and at most a few scrubbed error lines."""
    status = activity.status
    return ImportState(
        activity_id=activity.activity_id,
        state=activity.state,
        percent_done=activity.percent_done,
        items_total_count=status.items_total_count,
        person_count=status.person_count,
        error_count=status.error_count,
        correctable_count=status.correctable_count,
        cannot_add_to_list_count=status.cannot_add_to_list_count,
        activity_errors=tuple(scrub(e)[:300] for e in activity.errors[:MAX_ACTIVITY_ERRORS]),
    )


def key_day(usage: Usage, limit: int) -> KeyDay:
    """The key's day as a run weighs it: nothing is left while a quota stop holds (the
    stop then says when sending starts again)."""
    resets_at = usage.stopped_until or usage.resets_at
    reset = datetime.fromisoformat(resets_at.replace("Z", "+00:00")).timestamp()
    left = 0 if usage.stopped_until else usage.left(limit)
    return KeyDay(
        day=usage.day,
        used=usage.used,
        limit=limit,
        left=left,
        resets_at=resets_at,
        resets_in=max(reset - usage.read_at, 0.0),
    )


def resume_hint(run_id: str) -> str:
    return (
        f"start the run again with run id {run_id} (ccexport run ... --run-id {run_id}); "
        "chunks Constant Contact already accepted are not sent again"
    )


class RunActivities:
    """The four activities over one set of services."""

    def __init__(self, services: RunServices, *, on_rows: RowsCallback | None = None) -> None:
        self.services = services
        self.on_rows = on_rows
        self._session: aiohttp.ClientSession | None = None
        self._connections: Connections | None = None
        self._managers: dict[str, tuple[str, TokenManager]] = {}
        """Connection -> (the version of its record the manager was made under, manager)."""
        self._setup: asyncio.Lock | None = None
        self._states: StateStore | None = None

    @property
    def states(self) -> StateStore:
        """Export states, kept beside the runs (shared/exports/state.py)."""
        if self._states is None:
            self._states = state_store_for(self.services.runs)
        return self._states

    # -- prepare_segment ----------------------------------------------------------------

    @traced
    async def prepare_segment(self, data: Mapping[str, Any]) -> dict[str, Any]:
        run = RunInput.from_json(data)
        try:
            await self._check(run.scope, run.connection)
        except RunStopped as exc:
            return PreparedRun(run.run_id, source=run.source, error=str(exc)).to_json()
        return await asyncio.to_thread(self._prepare, run)

    def _prepare(self, run: RunInput) -> dict[str, Any]:
        """Prepare the run's segment (blocking: reads, parses and stages it)."""
        runs = self.services.runs
        try:
            export = run.definition()
            unresolved = list_names(export.list_ids)
            if unresolved:  # a run is started with ids (shared/exports/account.py resolves names)
                raise InputError(
                    f"list name(s) {', '.join(map(repr, unresolved))} were not resolved to "
                    "list ids before the run started"
                )
            staged = runs.staged_summary(run.run_id)
            earlier = None if staged is None else PrepareSummary.from_json(staged)
            if earlier is not None and earlier.list_ids == export.list_ids:
                log.info("run %s: using the segment an earlier attempt prepared", run.run_id)
                staging = runs.staging_location(run.run_id)
                return _prepared(run.run_id, earlier, staging, reused=True).to_json()
            with self.services.prepare_slots.hold() as waited:
                if waited >= 1.0:
                    log.info("run %s: waited %.0f s for the machine's cores", run.run_id, waited)
                result = self._prepare_segment(run, export)
        except InputError as exc:
            return PreparedRun(run.run_id, source=run.source, error=str(exc)).to_json()
        return result.to_json()

    def _prepare_segment(self, run: RunInput, export: ExportDefinition) -> PreparedRun:
        """Read, parse and stage the run's segment, or find it the one last sent."""
        runs = self.services.runs
        staging = runs.staging_location(run.run_id)
        store, name = files.resolve(run.source, self.services.blob_service)
        segment = segments.locate(store, name, encoding=export.encoding)
        base = baseline(self.states, export, segment, full=run.options.full)
        same = skip_unchanged(base, segment, runs.staging_output(run.run_id))
        if same is not None:
            log.info("run %s: the segment is the one last sent; nothing to send", run.run_id)
            return _prepared(run.run_id, same, staging, reused=False)
        progress = None
        if self.on_rows is not None:
            on_rows, run_id = self.on_rows, run.run_id
            progress = lambda rows: on_rows(run_id, rows)  # noqa: E731
        tracker = base.tracker()
        result = prepare(
            segment,
            export,
            runs.staging_output(run.run_id),
            max_body_bytes=run.options.max_body_bytes,
            progress=progress,
            # The columnar path: clean blocks are mapped in threads of this process,
            # sharing one copy of Arrow, so a run holds no worker processes (faster
            # and lighter than the row path in two processes: docs/DEVELOPING.md).
            fast=True,
            changes=tracker,
            describe_changes=lambda counts: changes_json(base, counts, tracker.keys),
        )
        return _prepared(run.run_id, result.prepared, staging, reused=False)

    # -- find_members ---------------------------------------------------------------------

    @traced
    async def find_members(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Who is on each list, and which of them this run would remove (mirror mode)."""
        run = RunInput.from_json(data)
        export, runs = run.definition(), self.services.runs
        summary = await asyncio.to_thread(runs.staged_summary, run.run_id)
        changes = Changes.from_json(PrepareSummary.from_json(summary or {}).changes)
        staged = await asyncio.to_thread(runs.read_staged, run.run_id, SNAPSHOT_FILE)
        if summary is None or staged is None or not changes.state_key:
            return MembersResult(error="the run's prepared segment is missing").to_json()
        try:
            client = await self._client(run.connection, run.scope)
        except RunStopped as exc:
            return MembersResult(error=str(exc)).to_json()
        segment = ExportState.from_bytes(staged).keys
        previous, claimed = await asyncio.to_thread(
            self._state_and_claims, changes.state_key, export.list_ids
        )
        same_definition = previous.header.get("definition_hash") == definition_hash(export)
        found: list[ListChanges] = []
        via = ""
        try:
            for list_id in export.list_ids:
                members = await list_members(
                    client, list_id, poll_interval=min(run.options.poll_seconds, 5.0)
                )
                via = via or members.via
                found.append(
                    plan_list(
                        list_id,
                        members,
                        segment=segment,
                        previous=previous.keys if same_definition else EMPTY,
                        managed=previous.managed_in(list_id),
                        claimed=claimed.get(list_id, EMPTY),
                    )
                )
        except (QuotaExhausted, ReauthorizationRequired, RemoteError) as exc:
            stop = refusal(exc)
            return MembersResult(
                requests=client.stats.requests, error=stop.error, resets_at=stop.resets_at
            ).to_json()
        await asyncio.to_thread(runs.write_staged, run.run_id, PLAN_FILE, write_plan(found))
        plans = tuple(c.plan for c in found)
        return MembersResult(lists=plans, requests=client.stats.requests, via=via).to_json()

    def _state_and_claims(
        self, key: str, list_ids: tuple[str, ...]
    ) -> tuple[ExportState, dict[str, Any]]:
        """The export's state, and per list the contacts of other exports sending to it."""
        try:
            previous = load(self.states, key) or ExportState.new(key)
        except StateError:
            previous = ExportState.new(key)
        claimed: dict[str, Any] = {}
        for list_id, others in others_sharing(self.states, key, list_ids).items():
            snapshots = []
            for other in others:
                try:
                    state = load(self.states, other)
                except StateError:
                    continue
                if state is not None:
                    snapshots.append(state.keys)
            claimed[list_id] = union(*snapshots)
        return previous, claimed

    # -- apply_removals -------------------------------------------------------------------

    @traced
    async def apply_removals(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Remove the planned members from their lists (membership only)."""
        run = RunInput.from_json(data)
        runs = self.services.runs
        mark = await asyncio.to_thread(runs.read_staged, run.run_id, REMOVALS_MARK)
        if mark is not None:
            return RemovalResult.from_json(orjson.loads(mark)).to_json()
        raw = await asyncio.to_thread(runs.read_staged, run.run_id, PLAN_FILE)
        if raw is None:
            return RemovalResult(error="the run's removal plan is missing").to_json()
        plan = read_plan(raw)
        try:
            client = await self._client(run.connection, run.scope)
        except RunStopped as exc:
            return RemovalResult(error=str(exc)).to_json()
        ids: list[str] = []
        contacts = 0
        try:
            for list_id, staged in plan.items():
                if not staged.remove_ids:
                    continue
                activities = await client.remove_list_memberships(staged.remove_ids, [list_id])
                ids += [a.activity_id for a in activities]
                contacts += len(staged.remove_ids)
        except (QuotaExhausted, ReauthorizationRequired, RemoteError) as exc:
            stop = refusal(exc)
            return RemovalResult(
                tuple(ids), contacts, client.stats.requests, stop.error, stop.resets_at
            ).to_json()
        result = RemovalResult(tuple(ids), contacts, client.stats.requests)
        await asyncio.to_thread(
            runs.write_staged, run.run_id, REMOVALS_MARK, orjson.dumps(result.to_json())
        )
        return result.to_json()

    # -- upload_chunk ---------------------------------------------------------------------

    @traced
    async def upload_chunk(self, data: Mapping[str, Any]) -> dict[str, Any]:
        request = UploadRequest.from_json(data)
        run_id, chunk, runs = request.run_id, request.chunk, self.services.runs
        known = await asyncio.to_thread(runs.accepted, run_id, chunk.index)
        if known is not None:
            return UploadResult(
                chunk.index, UploadVerdict.ACCEPTED, activity_id=known, already_accepted=True
            ).to_json()
        try:
            client = await self._client(request.connection, request.scope)
        except RunStopped as exc:
            return UploadResult(chunk.index, UploadVerdict.STOPPED, error=str(exc)).to_json()
        except ReauthorizationRequired as exc:
            return UploadResult(chunk.index, UploadVerdict.REFUSED, error=str(exc)).to_json()
        body = await asyncio.to_thread(runs.read_chunk, run_id, chunk.name)
        try:
            activity = await client.import_json(body)
        except (QuotaExhausted, ReauthorizationRequired, RemoteError) as exc:
            stop = refusal(exc)  # a busy account (429s) is raised: later may work
            return UploadResult(
                chunk.index,
                UploadVerdict.QUOTA_EXHAUSTED if stop.quota else UploadVerdict.REFUSED,
                requests=client.stats.requests,
                error=stop.error,
                resets_at=stop.resets_at,
            ).to_json()
        await asyncio.to_thread(runs.mark_accepted, run_id, chunk.index, activity.activity_id)
        return UploadResult(
            chunk.index,
            UploadVerdict.ACCEPTED,
            activity_id=activity.activity_id,
            requests=client.stats.requests,
            resends=client.stats.import_resends,
        ).to_json()

    # -- poll_imports ---------------------------------------------------------------------

    @traced
    async def poll_imports(self, data: Mapping[str, Any]) -> dict[str, Any]:
        request = PollRequest.from_json(data)
        if not request.activity_ids:
            return PollResult().to_json()
        try:
            client = await self._client(request.connection, request.scope)
        except RunStopped as exc:
            return PollResult(error=str(exc), stopped=True).to_json()
        try:
            found = await client.poll_imports(request.activity_ids)
        except QuotaExhausted as exc:
            return PollResult(
                requests=client.stats.requests, error=str(exc), resets_at=exc.resets_at
            ).to_json()
        states = tuple(import_state(activity) for activity in found.values())
        return PollResult(imports=states, requests=client.stats.requests).to_json()

    # -- quota_left -----------------------------------------------------------------------

    @traced
    async def quota_left(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The API key's day, as every pacer sharing its record counted it."""
        usage = await asyncio.to_thread(self.services.pacer.usage)
        return key_day(usage, self.services.settings.daily_quota).to_json()

    # -- finish_run -----------------------------------------------------------------------

    @traced
    def finish_run(self, data: Mapping[str, Any]) -> dict[str, Any]:
        request = FinishRequest.from_json(data)
        runs, run_id = self.services.runs, request.run.run_id
        # A body counted short is deleted only once the state is written: the state
        # reads its contacts' keys to leave them unrecorded (shared/runs/next_state.py).
        short = [o for o in request.outcomes if o.fate is ChunkFate.IMPORTED and o.shortfall]
        for outcome in request.outcomes:
            if outcome.fate is ChunkFate.IMPORTED and not outcome.shortfall:
                runs.delete_chunk(run_id, outcome.chunk.name)
            elif outcome.fate is ChunkFate.IMPORT_FAILED:
                runs.forget_accepted(run_id, outcome.chunk.index)  # send it again next time
        rejects = runs.publish_rejects(run_id)
        try:
            state = finish_state(runs, self.states, request)
        except (StateError, OSError, AzureError) as exc:
            log.warning("run %s: the export state was not written (%s)", run_id, exc)
            state = {"written": False, "why": f"could not be written: {type(exc).__name__}"}
        for outcome in short:
            runs.delete_chunk(run_id, outcome.chunk.name)
        report = build_report(
            request,
            staging=runs.staging_location(run_id),
            rejects_file=rejects,
            resume_hint=resume_hint(run_id),
            state=state,
            retried=retried(runs, run_id),
        )
        location = runs.write_report(run_id, report)
        meters.record_run(log_run_finished(log, report))
        nothing_held = not report["not_delivered"]["chunks"]
        if request.status is RunStatus.COMPLETED or (
            nothing_held and request.status is RunStatus.FAILED
        ):
            runs.clear_staging(run_id)
        return {"report": location, "status": request.status.value}

    # -- Constant Contact ------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.services.retry.request_timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _check(self, scope: RunScope | None, connection: str) -> str:
        """The version of ``connection`` this step may use; RunStopped when the run may
        not go on (shared/runs/recheck.py). Without a gate (the command line): ""."""
        gate = self.services.gate
        if gate is None:
            return ""
        cleared = await gate.check(scope)
        if scope is not None and scope.connection != connection:
            raise RunStopped("the step names another connection than its run")
        return cleared.connection_version

    async def _tokens(self, connection: str, version: str) -> TokenManager:
        """The connection's token manager, kept while its record is unchanged: one made
        under another version of the record (removed, re-created, reconnected, its
        consent or roles changed) is dropped with its cached access token."""
        kept = self._managers.get(connection)
        if kept is not None and kept[0] == version:
            return kept[1]
        if self._setup is None:
            self._setup = asyncio.Lock()
        async with self._setup:
            if self._connections is None:
                self._connections = await self.services.connections()
            kept = self._managers.get(connection)
            if kept is None or kept[0] != version:
                kept = (version, self._connections.tokens(connection))
                self._managers[connection] = kept
        return kept[1]

    async def _client(self, connection: str, scope: RunScope | None) -> ConstantContactClient:
        """A client of its own per call (its stats are this call's), sharing the session,
        the token manager and the process's pacer; RunStopped when the run's grant no
        longer holds."""
        manager = await self._tokens(connection, await self._check(scope, connection))
        return ConstantContactClient(
            self.services.settings.api_base,
            manager.access_token,
            self.services.pacer,
            retry=self.services.retry,
            session=self._http(),
        )

    async def aclose(self) -> None:
        """Close the HTTP session and the secret store, on the loop that used them."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._connections, self._managers, self._setup = None, {}, None
        await self.services.secrets.close()
