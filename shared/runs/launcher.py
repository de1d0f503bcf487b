"""Starting export runs: from a blob event, from the schedule, or because someone asked.

All three end in one place, :meth:`Launcher.start`, which starts a run only when its
key is neither running nor done: blob events arrive more than once, the schedule
fires again over folders it has already sent, and people press buttons twice. The
one done run the schedule starts again by itself is one the daily quota stopped,
once the quota has reset: it resumes under its own id and sends only the rest. The
engine behind it is a Protocol, so the function app passes the Durable client and
the local runner its own engine; nothing here imports ``azure.functions``.

What a run is given (the orchestrator's input, ``RunInput``): the run id, the export
definition, the run folder as ``az://container/path``, the connection's name, what
started it and when, and its grant: who started it and the id of the connection it
was allowed to send with, which its activities check again before every step
(shared/runs/recheck.py). No contact data and no secrets.

Before a run starts, its ``Preflight`` (the function app's: shared/exports/account.py) looks at
the account when the definition needs it: list names become ids (once, here: the
run carries the ids) and mapped custom fields are verified (or created). What it
refuses is input to fix: ``run_now`` raises it (the HTTP API answers 400); blob
events and the schedule log it and start nothing for that export.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from shared.constant_contact.connections import DEFAULT_CONNECTION
from shared.errors import CcexportError, ConfigError, InputError, ReauthorizationRequired
from shared.exports.access import Caller
from shared.exports.catalog import Catalog, Connection, ConnectionStatus, NotFound
from shared.exports.definitions import ExportDefinition
from shared.runs.contract import RunInput, RunOptions, RunStatus
from shared.runs.grants import RunGrant
from shared.runs.index import RunIndex, RunRecord
from shared.segments.inbox import Listing, RunFolder, completeness, newest_complete, run_key
from shared.segments.layout import parse_blob_name, parse_run_folder

log = logging.getLogger(__name__)

# Durable runtime statuses (OrchestrationRuntimeStatus values).
ACTIVE = frozenset({"Running", "Pending", "ContinuedAsNew", "Suspended"})
DONE = frozenset({"Completed"})


class Engine(Protocol):
    """What starting a run needs of an orchestration engine."""

    async def runtime_status(self, run_id: str) -> str | None:
        """The instance's runtime status, or None when there is no such instance."""
        ...

    async def start(self, run_id: str, run_input: dict[str, Any]) -> None:
        """Start the orchestrator under this instance id."""
        ...

    async def output(self, run_id: str) -> Mapping[str, Any] | None:
        """A finished instance's output (the run's RunOutcome), or None."""
        ...


class NotReady(CcexportError):
    """An export that cannot send now: no connection, consent not accepted, not connected."""


Preflight = Callable[[ExportDefinition], Awaitable[ExportDefinition]]
"""The definition a run is started with: its lists as ids, its custom fields checked."""


class Outcome(StrEnum):
    STARTED = "started"
    RUNNING = "already_running"
    DONE = "already_done"


@dataclass(frozen=True)
class RunStart:
    """What the launcher did with one run folder: started its run, or found it running or done."""

    run_id: str
    outcome: Outcome
    export: str
    source: str
    status: str | None = None  # the runtime status found, when not started


def run_input(  # noqa: PLR0917 - the run's key parts, in order
    run_id: str,
    definition: ExportDefinition,
    folder: RunFolder,
    trigger: str,
    now: datetime,
    options: RunOptions | None = None,
    grant: RunGrant | None = None,
) -> dict[str, Any]:
    """The orchestrator's input: shared.runs.contract.RunInput, as JSON."""
    return RunInput.create(
        run_id,
        definition,
        folder.source,
        connection=definition.connection or DEFAULT_CONNECTION,
        trigger=trigger,
        requested_at=now,
        options=options,
        grant=grant,
    ).to_json()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def require_segments(definition: ExportDefinition) -> None:
    """Refuse to run (or preview) a definition that names no segments: it reads nothing."""
    if not definition.segments:
        raise ConfigError(
            f"export {definition.name!r} has no segments: add the export and table "
            "folders it reads before running it"
        )


async def newest_folders(
    inbox: Listing, definition: ExportDefinition, now: datetime, quiet_seconds: float
) -> list[RunFolder]:
    """What a run started now reads: the newest complete run folder of each table the
    definition's segments match (``run_now``, and the console's preview of it).
    ConfigError when there is none yet."""
    folders, models = await inbox.scan()
    targets = [
        f for f in newest_complete(folders, models, now, quiet_seconds) if f.matched_by(definition)
    ]
    if not targets:
        raise ConfigError(
            f"export {definition.name!r}: no complete run folder in "
            f"{inbox.name} matches its segments yet"
        )
    return targets


class Launcher:
    """Decides which runs to start and starts each at most once."""

    def __init__(
        self,
        catalog: Catalog,
        inbox: Listing,
        runs: RunIndex,
        engine: Engine,
        *,
        quiet_seconds: float,
        clock: Callable[[], datetime] = _utcnow,
        preflight: Preflight | None = None,
        poll_seconds: float | None = None,
    ) -> None:
        self.catalog = catalog
        self.inbox = inbox
        self.runs = runs
        self.engine = engine
        self.quiet_seconds = quiet_seconds
        self.poll_seconds = poll_seconds
        """The first status poll of every run started here (the app's RUN_POLL_SECONDS);
        None keeps RunOptions' default."""
        self._clock = clock
        self._preflight = preflight

    async def ready_connection(self, definition: ExportDefinition) -> Connection:
        """The connection a definition sends with, if it may send now; else NotReady."""
        if not definition.connection:
            raise NotReady(f"export {definition.name!r} names no connection")
        try:
            stored = await self.catalog.require_connection(definition.connection)
        except NotFound:
            raise NotReady(
                f"export {definition.name!r} uses connection {definition.connection!r}, "
                "which does not exist"
            ) from None
        connection = stored.value
        if not connection.sends(definition):
            raise NotReady(
                f"export {definition.name!r} was saved for an earlier connection named "
                f"{connection.name!r} (removed since); save the export again to send with "
                "this one"
            )
        if connection.consent is None:
            raise NotReady(
                f"connection {connection.name!r}: the data-privacy consent has not been "
                "accepted, so no export may send with it (an admin accepts it: PUT "
                f"/api/connections/{connection.name} with "
                '{"privacy_consent": {"accepted": true}})'
            )
        status = await self.catalog.status_of(connection)
        if status is ConnectionStatus.NOT_CONNECTED:
            raise NotReady(
                f"connection {connection.name!r} is not connected to Constant Contact yet "
                f"(GET /api/connections/{connection.name}/connect)"
            )
        if status is ConnectionStatus.NEEDS_REAUTHORISATION:
            raise NotReady(
                f"connection {connection.name!r} needs to be reconnected "
                f"(GET /api/connections/{connection.name}/connect)"
            )
        return connection

    async def start(
        self,
        definition: ExportDefinition,
        folder: RunFolder,
        trigger: str,
        *,
        restart_done: bool = False,
        options: RunOptions | None = None,
        caller: Caller | None = None,
    ) -> RunStart:
        """Start this folder under this definition unless that run is running or done
        (``restart_done``: a person asked to send a finished run again). ``caller``:
        who asked, when a person did; the run's grant records them, and the
        connection it may send with (shared/runs/grants.py). NotReady when the
        connection may not send now."""
        if not definition.name:
            raise ConfigError("only a named export definition can be run")
        run_id = run_key(definition.name, folder)
        status = await self.engine.runtime_status(run_id)
        if status in ACTIVE:
            return RunStart(run_id, Outcome.RUNNING, definition.name, folder.source, status)
        if status in DONE and not restart_done:
            if not await self._resumable(run_id):
                return RunStart(run_id, Outcome.DONE, definition.name, folder.source, status)
            log.info(
                "export %r: run %s resumes after the daily quota's reset", definition.name, run_id
            )
        connection = await self.ready_connection(definition)
        grant = RunGrant.given(connection.id, trigger, caller)
        checked = definition
        if self._preflight is not None:
            try:
                checked = await self._preflight(definition)
            except ReauthorizationRequired as exc:
                raise NotReady(str(exc)) from None
        if self.poll_seconds is not None:
            options = replace(options or RunOptions(), poll_seconds=self.poll_seconds)
        payload = run_input(run_id, checked, folder, trigger, self._clock(), options, grant)
        try:
            await self.engine.start(run_id, payload)
        except Exception:
            # Deliveries of one event may arrive together: all find no run, one starts
            # it, and the host refuses the others (host.json: NonRunningStates). Those
            # are answered as "already running", not failed and delivered yet again.
            now = await self.engine.runtime_status(run_id)
            if now in ACTIVE:
                return RunStart(run_id, Outcome.RUNNING, definition.name, folder.source, now)
            raise
        await self.runs.record(
            RunRecord(
                run_id,
                definition.name,
                folder.source,
                definition.connection,
                trigger,
                payload["requested_at"],
            )
        )
        log.info(
            "export %r: run %s started (%s) for %r", definition.name, run_id, trigger, folder.path
        )
        return RunStart(run_id, Outcome.STARTED, definition.name, folder.source, status)

    async def _resumable(self, run_id: str) -> bool:
        """Whether a finished run stopped on the daily quota and its reset has passed:
        then starting it again under its id sends only what Constant Contact did not
        accept (the marks of accepted imports stay). A run waiting for confirmation,
        or any other, never goes on by itself."""
        output = await self.engine.output(run_id)
        if not output or output.get("status") != RunStatus.QUOTA_EXHAUSTED.value:
            return False
        resets = output.get("resume_after")
        try:
            at = datetime.fromisoformat(str(resets).replace("Z", "+00:00"))
        except ValueError:
            return False
        return (at if at.tzinfo else at.replace(tzinfo=UTC)) <= self._clock()

    async def _startable(self) -> list[ExportDefinition]:
        """Enabled definitions whose connection may send; the others are logged once."""
        ready: list[ExportDefinition] = []
        for stored in await self.catalog.exports():
            definition = stored.value
            if not definition.enabled or not definition.segments:
                continue
            try:
                await self.ready_connection(definition)
            except NotReady as exc:
                log.warning("export %r not started: %s", definition.name, exc)
                continue
            ready.append(definition)
        return ready

    async def on_blob_created(self, blob_name: str, trigger: str = "blob") -> list[RunStart]:
        """A blob arrived in the inbox: start every matching export whose run folder is
        now complete. Anything else (other files, incomplete folders) starts nothing."""
        path = parse_blob_name(blob_name)
        if path is None:
            log.info("inbox blob %r is not part of a Customer Insights run; ignored", blob_name)
            return []
        now = self._clock()
        if path.run_folder is not None:
            folder = await self.inbox.run_folder(path.run_folder)
            folders = [folder] if folder is not None else []
            models = {}
            model = await self.inbox.model(path.export_folder)
            if model is not None:
                models[path.export_folder] = model
        else:
            # model.json: the newest run of each table of this export may now be whole.
            found, models = await self.inbox.scan(f"{path.export_folder}/")
            newest: dict[str, RunFolder] = {}
            for candidate in found:
                if candidate.table not in newest or candidate.stamp > newest[candidate.table].stamp:
                    newest[candidate.table] = candidate
            folders = list(newest.values())
        results: list[RunStart] = []
        definitions: list[ExportDefinition] | None = None
        for folder in folders:
            verdict = completeness(
                folder, models.get(folder.export_folder), now, self.quiet_seconds
            )
            if not verdict.complete:
                log.info("run folder %r not complete yet: %s", folder.path, verdict.reason)
                continue
            if definitions is None:
                definitions = await self._startable()
            for definition in definitions:
                if folder.matched_by(definition):
                    results += await self._start_or_log(definition, folder, trigger)
        return results

    async def _start_or_log(
        self, definition: ExportDefinition, folder: RunFolder, trigger: str
    ) -> list[RunStart]:
        """Start a run for an event or the schedule; what a person must fix (a list or a
        custom field the account lacks, a connection to connect again) is logged and
        starts nothing, since a retry of the event could not change it."""
        try:
            return [await self.start(definition, folder, trigger)]
        except (InputError, NotReady) as exc:
            log.warning("export %r not started for %r: %s", definition.name, folder.path, exc)
            return []

    async def refresh_all(self, trigger: str = "timer") -> list[RunStart]:
        """The schedule: every enabled export from its newest complete run folder(s),
        one per matching table; a folder already sent under the definition is skipped."""
        definitions = await self._startable()
        if not definitions:
            return []
        folders, models = await self.inbox.scan()
        whole = newest_complete(folders, models, self._clock(), self.quiet_seconds)
        results: list[RunStart] = []
        for definition in definitions:
            for folder in whole:
                if folder.matched_by(definition):
                    results += await self._start_or_log(definition, folder, trigger)
        return results

    async def run_now(
        self,
        definition: ExportDefinition,
        *,
        folder_path: str | None = None,
        force: bool = False,
        trigger: str = "http",
        options: RunOptions | None = None,
        caller: Caller | None = None,
    ) -> list[RunStart]:
        """Someone asked: run the definition now, on the folder named or the newest
        complete folder of each matching table. NotReady when it cannot send;
        ConfigError when there is nothing to send; InputError for a named folder its
        segments do not match, checked from the path before the inbox is listed: the
        right to run an export is no right to read another export's files.

        ``options`` may ask for a ``full`` run or ``confirm_removals``; confirming
        starts a run that stopped for confirmation again under its own run id (it is
        done), which reuses what it had prepared."""
        await self.ready_connection(definition)
        require_segments(definition)
        now = self._clock()
        if folder_path is not None:
            path = folder_path.strip("/")
            where = parse_run_folder(path)
            folder = None
            if where is not None:
                if not definition.matches(where.root, where.export, where.table or ""):
                    raise InputError(
                        f"export {definition.name!r}: folder {path!r} is not in its segments; "
                        "a run reads only the folders its export's segments match"
                    )
                folder = await self.inbox.run_folder(path)
            if folder is None:
                raise ConfigError(
                    f"{self.inbox.name}/{folder_path}: no Customer Insights part files there "
                    "(expected <Export>/<Table>/yyyy/MM/dd/HHmm)"
                )
            targets = [folder]
        else:
            targets = await newest_folders(self.inbox, definition, now, self.quiet_seconds)
        again = force or (options is not None and options.confirm_removals)
        return [
            await self.start(
                definition, f, trigger, restart_done=again, options=options, caller=caller
            )
            for f in targets
        ]
