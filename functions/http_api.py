"""The HTTP API: export definitions, runs and connections (see functions/principal.py
for who may do what).

Answers are JSON. An error is ``{"error": "<one sentence>"}`` with a status that says
its kind (400 invalid input, 403 not allowed, 404 unknown, 409 conflicts with what
is there, 412 stale ETag); never a stack trace, a token or an email address.
Definitions and connections carry ETags: send ``If-Match`` to update or delete what
you read; a PUT without it only creates.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func
import orjson

from functions.principal import Caller, Forbidden, Unauthenticated, caller_of
from functions.services import Services, services
from shared.constant_contact.connect import PENDING_TTL
from shared.errors import (
    AuthorizationError,
    CcexportError,
    InputError,
    ReauthorizationRequired,
    RemoteError,
)
from shared.exports import account
from shared.exports import definitions as exports
from shared.exports.catalog import Connection, NotFound, Stored, connection_from_request
from shared.exports.definitions import ExportDefinition
from shared.runs.contract import RunOptions
from shared.runs.index import RunRecord
from shared.runs.launcher import NotReady, Outcome, StartResult
from shared.secrets.store import SecretStoreError
from shared.segments.inbox import export_of_run
from shared.storage.documents import DocumentChanged, DocumentExists
from shared.storage.locks import LockError

log = logging.getLogger(__name__)

bp = df.Blueprint()

CALLBACK_ROUTE = "oauth/callback"
TERMINAL = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
_OAUTH_ERROR = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_RUNS = 100


# --- answers --------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        orjson.dumps(body), status_code=status, mimetype="application/json", headers=headers
    )


def _error(status: int, message: str) -> func.HttpResponse:
    return _json(status, {"error": message})


_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (NotReady, 409),
    (ReauthorizationRequired, 409),
    (DocumentExists, 409),
    (DocumentChanged, 412),
    (InputError, 400),  # ConfigError, AuthorizationError
    (LockError, 503),
    (SecretStoreError, 502),
    (RemoteError, 502),
)


async def _answer(handler: Callable[[], Awaitable[func.HttpResponse]]) -> func.HttpResponse:
    """Run a handler; turn the errors it may raise into one-line JSON answers."""
    try:
        return await handler()
    except CcexportError as exc:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        if status >= 500:
            log.error("HTTP API: %s: %s", type(exc).__name__, exc)
        return _error(status, str(exc))
    except Exception:
        log.exception("HTTP API: unexpected error")
        return _error(500, "internal error; the function app's log has the details")


def _body(req: func.HttpRequest, *, optional: bool = False) -> Any:
    raw = req.get_body()
    if not raw.strip():
        if optional:
            return {}
        raise InputError("the request needs a JSON body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InputError("the body is not valid JSON") from None


def _if_match(req: func.HttpRequest) -> str | None:
    value = req.headers.get("If-Match")
    return value.strip() if value and value.strip() else None


# --- access -----------------------------------------------------------------------------


async def _connection_of(app: Services, definition: ExportDefinition) -> Connection | None:
    if not definition.connection:
        return None
    stored = await app.catalog.connection(definition.connection)
    return stored.value if stored else None


async def _require_use(app: Services, caller: Caller, definition: ExportDefinition) -> None:
    if not caller.may_use(await _connection_of(app, definition)):
        raise Forbidden(
            f"export {definition.name!r}: your roles do not allow its connection "
            f"{definition.connection!r}"
        )


def _export_answer(status: int, stored: Stored[ExportDefinition]) -> func.HttpResponse:
    return _json(status, stored.value.to_json(), {"ETag": stored.etag})


# --- export definitions -------------------------------------------------------------------


@bp.route(route="exports", methods=["GET"])
async def exports_list(req: func.HttpRequest) -> func.HttpResponse:
    """The export definitions the caller may use."""

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        async with services() as app:
            connections = {c.value.name: c.value for c in await app.catalog.connections()}
            found = [
                {"name": s.value.name, "etag": s.etag, "definition": s.value.to_json()}
                for s in await app.catalog.exports()
                if caller.may_use(connections.get(s.value.connection or ""))
            ]
        return _json(200, {"exports": found})

    return await _answer(handle)


@bp.route(route="exports/{name}", methods=["GET", "PUT", "DELETE"])
async def export_item(req: func.HttpRequest) -> func.HttpResponse:
    """Read, create or update (validated; starts nothing), or delete one definition."""
    name = req.route_params.get("name", "")

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        async with services() as app:
            existing = await app.catalog.export(name)
            if req.method == "GET":
                if existing is None:
                    raise NotFound(f"no export definition named {name!r}")
                await _require_use(app, caller, existing.value)
                return _export_answer(200, existing)
            if req.method == "DELETE":
                if existing is None:
                    raise NotFound(f"no export definition named {name!r}")
                await _require_use(app, caller, existing.value)
                await app.catalog.delete_export(name, _if_match(req))
                return func.HttpResponse(status_code=204)
            return await _save_export(app, caller, req, name, existing)

    return await _answer(handle)


async def _save_export(
    app: Services,
    caller: Caller,
    req: func.HttpRequest,
    name: str,
    existing: Stored[ExportDefinition] | None,
) -> func.HttpResponse:
    body = _body(req)
    if not isinstance(body, dict):
        raise InputError("export definition: expected a JSON object")
    if body.get("name", name) != name:
        raise InputError(f"export definition: the body names {body['name']!r}, the URL {name!r}")
    definition = exports.from_json({**body, "name": name})
    if not definition.connection:
        raise InputError("export definition: name the connection it sends with ('connection')")
    connection = await app.catalog.connection(definition.connection)
    if connection is None:
        raise InputError(
            f"export definition: connection {definition.connection!r} does not exist "
            "(an admin creates it with PUT /api/connections/{name})"
        )
    if not caller.may_use(connection.value):
        raise Forbidden(f"your roles do not allow connection {definition.connection!r}")
    if_match = _if_match(req)
    if existing is not None:
        if if_match is None:
            raise DocumentExists(
                f"export {name!r} exists; send If-Match with its ETag to replace it"
            )
        await _require_use(app, caller, existing.value)  # no taking over others' exports
    etag = await app.catalog.save_export(definition, if_match)
    return _export_answer(201 if if_match is None else 200, Stored(definition, etag))


# --- runs --------------------------------------------------------------------------------


def _start_json(
    client: df.DurableOrchestrationClient, req: func.HttpRequest, result: StartResult
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "run_id": result.run_id,
        "outcome": result.outcome.value,
        "source": result.source,
    }
    if result.outcome is Outcome.STARTED:
        doc["links"] = client.get_client_response_links(req, result.run_id)
    else:
        doc["runtime_status"] = result.status
    return doc


@bp.route(route="exports/{name}/runs", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def export_runs(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Start a run now: 202 with status URLs; 409 if that run is already running.

    The body may hold ``folder`` (a run folder path), ``force`` (send a finished run
    again), ``full`` (send every contact, not only new and changed ones) and
    ``confirm_removals`` (a mirror run that stopped with ``needs_confirmation`` may
    remove past the definition's ``max_removal_share``; it restarts that run).
    """
    name = req.route_params.get("name", "")

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        body = _body(req, optional=True)
        flags = ("force", "full", "confirm_removals")
        if not isinstance(body, dict) or set(body) - {"folder", *flags}:
            raise InputError(
                'the body may hold "folder" (a run folder path), "force", "full" '
                'and "confirm_removals"'
            )
        folder = body.get("folder")
        if folder is not None and not isinstance(folder, str):
            raise InputError('"folder" must be a path in the inbox container')
        for flag in flags:
            if not isinstance(body.get(flag, False), bool):
                raise InputError(f'"{flag}" must be true or false')
        force = body.get("force", False)
        options = RunOptions(
            full=body.get("full", False), confirm_removals=body.get("confirm_removals", False)
        )
        async with services() as app:
            definition = (await app.catalog.require_export(name)).value
            await _require_use(app, caller, definition)
            results = await app.launcher(client).run_now(
                definition,
                folder_path=folder,
                force=force,
                options=options if options != RunOptions() else None,
            )
        started = [r for r in results if r.outcome is Outcome.STARTED]
        if len(results) == 1 and started:
            accepted: func.HttpResponse = client.create_check_status_response(
                req, started[0].run_id
            )
            return accepted
        runs = [_start_json(client, req, r) for r in results]
        if not started:
            first = results[0]
            why = (
                "is already running"
                if first.outcome is Outcome.RUNNING
                else 'was already sent; send {"force": true} to send it again'
            )
            return _json(409, {"error": f"run {first.run_id} {why}", "runs": runs})
        location = runs[results.index(started[0])]["links"]["statusQueryGetUri"]
        return _json(202, {"runs": runs}, {"Location": location})

    return await _answer(handle)


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


async def _run_status(client: df.DurableOrchestrationClient, run_id: str) -> dict[str, Any]:
    status = await client.get_status(run_id)
    runtime = status.runtime_status if status else None
    return {
        "runtime_status": runtime.value if runtime is not None else None,
        "custom_status": status.custom_status if status else None,
        "created_time": _iso(status.created_time) if status else None,
        "last_updated_time": _iso(status.last_updated_time) if status else None,
        "output": status.output if status and runtime is not None else None,
    }


@bp.route(route="runs", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def runs_list(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Recent runs (``?export=NAME``; ``&limit=N``, at most 100), newest first."""

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        export = req.params.get("export")
        try:
            limit = int(req.params.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_RUNS:
            raise InputError(f"limit must be a whole number from 1 to {MAX_RUNS}")
        records: list[RunRecord] = []
        async with services() as app:
            if export is not None:
                stored = await app.catalog.export(export)
                if stored is not None:
                    await _require_use(app, caller, stored.value)
                else:
                    caller.require_admin("list the runs of a deleted export")
                records = await app.runs.recent(export, limit)
            else:
                for stored in await app.catalog.exports():
                    if caller.may_use(await _connection_of(app, stored.value)):
                        records += await app.runs.recent(stored.value.name or "", limit)
                records = sorted(records, key=lambda r: r.requested_at, reverse=True)[:limit]
        runs = [{**r.to_json(), **await _run_status(client, r.run_id)} for r in records]
        for run in runs:
            run.pop("output", None)  # the list stays small; GET /api/runs/{id} has it
        return _json(200, {"runs": runs})

    return await _answer(handle)


@bp.route(route="runs/{run_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def run_item(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """A run's status and progress, and its report once it has finished."""
    run_id = req.route_params.get("run_id", "")

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        export = export_of_run(run_id)
        async with services() as app:
            stored = await app.catalog.export(export) if export else None
            if stored is not None:
                await _require_use(app, caller, stored.value)
            else:
                caller.require_admin("read runs that belong to no export definition")
            status = await _run_status(client, run_id)
            if status["runtime_status"] is None:
                raise NotFound(f"no run {run_id!r}")
            report = None
            if status["runtime_status"] in TERMINAL:
                report = await asyncio.to_thread(app.read_report, run_id)
        return _json(200, {"run_id": run_id, "export": export, **status, "report": report})

    return await _answer(handle)


# --- connections ----------------------------------------------------------------------------


async def _usable_connection(app: Services, caller: Caller, name: str) -> Stored[Connection]:
    """A connection the caller may use; 404 as for an unknown one otherwise."""
    existing = await app.catalog.connection(name)
    if existing is None or not caller.may_use(existing.value):
        raise NotFound(f"no connection named {name!r}")
    return existing


async def _connection_answer(
    app: Services, status: int, stored: Stored[Connection]
) -> func.HttpResponse:
    doc = stored.value.to_json()
    doc["status"] = (await app.catalog.status_of(stored.value)).value
    return _json(status, doc, {"ETag": stored.etag})


@bp.route(route="connections", methods=["GET"])
async def connections_list(req: func.HttpRequest) -> func.HttpResponse:
    """The connections the caller may use (all of them, for an admin)."""

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        async with services() as app:
            found = []
            for stored in await app.catalog.connections():
                if caller.may_use(stored.value):
                    doc = stored.value.to_json()
                    doc["status"] = (await app.catalog.status_of(stored.value)).value
                    found.append(doc)
        return _json(200, {"connections": found})

    return await _answer(handle)


@bp.route(route="connections/{name}", methods=["GET", "PUT", "DELETE"])
async def connection_item(req: func.HttpRequest) -> func.HttpResponse:
    """Read, create or update (admins), or delete with its tokens (admins)."""
    name = req.route_params.get("name", "")

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        async with services() as app:
            if req.method == "GET":
                return await _connection_answer(
                    app, 200, await _usable_connection(app, caller, name)
                )
            existing = await app.catalog.connection(name)
            if req.method == "DELETE":
                caller.require_admin("delete connections")
                if not await app.catalog.delete_connection(name, _if_match(req)):
                    raise NotFound(f"no connection named {name!r}")
                return func.HttpResponse(status_code=204)
            caller.require_admin("create or change connections")
            if_match = _if_match(req)
            if existing is not None and if_match is None:
                raise DocumentExists(
                    f"connection {name!r} exists; send If-Match with its ETag to change it"
                )
            connection = connection_from_request(
                name,
                _body(req),
                principal_id=caller.id,
                existing=existing.value if existing else None,
            )
            etag = await app.catalog.save_connection(connection, if_match)
            return await _connection_answer(
                app, 201 if if_match is None else 200, Stored(connection, etag)
            )

    return await _answer(handle)


@bp.route(route="connections/{name}/lists", methods=["GET", "POST"])
async def connection_lists(req: func.HttpRequest) -> func.HttpResponse:
    """The lists of the connection's account (name, id, members); ``POST {"name": ...}``
    creates one (201), or answers the existing list of that name (200)."""
    name = req.route_params.get("name", "")

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        async with services() as app:
            await _usable_connection(app, caller, name)
            if req.method == "GET":
                async with app.accounts().client(name) as client:
                    found = await account.account_lists(client)
                lists = [account.list_document(lst) for lst in found]
                return _json(200, {"connection": name, "lists": lists})
            body = _body(req)
            if not isinstance(body, dict) or set(body) != {"name"}:
                raise InputError('the body must be {"name": "<the new list\'s name>"}')
            list_name = account.new_list_name(body["name"])
            async with app.accounts().client(name) as client:
                made, created = await client.create_or_find_list(list_name)
        doc = {"connection": name, "created": created, "list": account.list_document(made)}
        return _json(201 if created else 200, doc)

    return await _answer(handle)


@bp.route(route="connections/{name}/custom_fields", methods=["GET"])
async def connection_custom_fields(req: func.HttpRequest) -> func.HttpResponse:
    """The custom fields of the connection's account (the names ``cf:NAME`` maps to)."""
    name = req.route_params.get("name", "")

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        async with services() as app:
            await _usable_connection(app, caller, name)
            async with app.accounts().client(name) as client:
                found = await account.account_custom_fields(client)
        fields = [account.field_document(custom) for custom in found]
        return _json(200, {"connection": name, "custom_fields": fields})

    return await _answer(handle)


def _redirect_uri(app: Services, req: func.HttpRequest) -> str:
    """Where Constant Contact sends the browser back: CTCT_REDIRECT_URI, else this
    app's own callback route (it must be registered with the Constant Contact app)."""
    configured = app.env.get("CTCT_REDIRECT_URI", "").strip()
    if configured:
        return configured
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}/api/{CALLBACK_ROUTE}"


@bp.route(route="connections/{name}/connect", methods=["GET"])
async def connection_connect(req: func.HttpRequest) -> func.HttpResponse:
    """Start connecting a Constant Contact account: redirect to its authorize page
    (authorization code with PKCE; state and verifier stay in the secret store)."""
    name = req.route_params.get("name", "")

    async def handle() -> func.HttpResponse:
        caller = caller_of(req.headers)
        caller.require_admin("connect accounts")
        async with services() as app:
            await app.catalog.require_connection(name)
            connections = await app.connections()
            url, pending = await connections.start_authorization(name, _redirect_uri(app, req))
            await app.catalog.remember_authorization(pending.state, name, PENDING_TTL)
        return func.HttpResponse(status_code=302, headers={"Location": url})

    return await _answer(handle)


@bp.route(route=CALLBACK_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Constant Contact's redirect back. Anonymous, because the browser arrives
    without the function key (and OAuth's ``code`` would clash with the key's query
    parameter); the single-use, unguessable state is what admits it."""

    async def handle() -> func.HttpResponse:
        state = req.params.get("state", "")
        if not state:
            raise AuthorizationError("the callback carries no state")
        async with services() as app:
            name = await app.catalog.authorization_connection(state)
            if name is None:
                raise AuthorizationError(
                    "this authorization is unknown, expired or already used; start it again"
                )
            error = req.params.get("error")
            if error is not None:
                await app.catalog.forget_authorization(state)
                shown = error if _OAUTH_ERROR.fullmatch(error) else "error"
                raise AuthorizationError(f"Constant Contact did not authorize {name!r}: {shown}")
            code = req.params.get("code", "")
            if not code:
                raise AuthorizationError("the callback carries no authorization code")
            connections = await app.connections()
            await connections.complete_authorization(name, state, code, _redirect_uri(app, req))
            await app.catalog.forget_authorization(state)
            connection = await app.catalog.mark_connected(name)
        return _json(200, {"connection": name, "status": connection.status.value})

    return await _answer(handle)
