"""The console's runs pages: the history, a run's page (live progress, then its report),
its rejects (**Download rejects** and a search), and **Confirm removals**.

Thin, as the HTTP API is: who may see a run is shared.runs.access's rule (the one
``GET /api/runs`` applies: the users of its export's connection, and admins), its
status is read as the API reads it (functions/http_api/runs.py), a confirmation starts
through shared.runs.launcher (shared/console/confirming.py), and what a page shows is
built in shared/console/ (page helper: functions/console/pages.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import orjson

from functions.console.pages import (
    Answer,
    Page,
    PageHandler,
    Redirect,
    Visit,
    console_path,
    page,
)
from functions.http_api.routes import CONNECTION_ROLES
from functions.http_api.runs import run_status
from shared.console.confirming import confirm_removals, list_names
from shared.console.rejects_search import Query, rejects_file, search_run
from shared.console.run_history import History, RunLine
from shared.console.run_view import (
    RunState,
    about,
    confirmation_of,
    progress_json,
    report_view,
    verdict,
)
from shared.console.safety import PAGE_HEADERS
from shared.console.wording import Action, problem
from shared.errors import ConfigError, InputError
from shared.exports.access import Forbidden, usable_exports
from shared.exports.catalog import NotFound
from shared.runs.access import require_run_reader, runs_limit, visible_runs
from shared.runs.ids import check_run_id
from shared.runs.launcher import NotReady
from shared.segments.inbox import export_of_run
from shared.wiring import stores

bp = df.Blueprint()
log = logging.getLogger(__name__)


def _kept_out(handler: PageHandler) -> PageHandler:
    """A caller the run's rule refuses gets a page that says why and where to go: the
    runs they may see (an admin can give them a role the connection allows)."""

    @functools.wraps(handler)
    async def answer(visit: Visit) -> Answer:
        try:
            return await handler(visit)
        except Forbidden as exc:
            shown = problem(
                403,
                f"{exc}. The runs page lists the runs you may see; an admin can add one of "
                "your roles to a connection to let you see the runs of its exports",
                console=console_path(),
                action=Action("Runs you may see", console_path("runs")),
            )
            return Page("problem.html", {"title": shown.title, "problem": shown}, 403)

    return answer


async def _readable_run(visit: Visit) -> tuple[str, str]:
    """The run id of the route and its export, once the caller may read its runs."""
    raw = visit.param("run_id")
    try:
        run_id = check_run_id(raw)
    except ConfigError:
        raise NotFound(f"no run {raw[:80]!r}") from None
    export = export_of_run(run_id)
    await require_run_reader(visit.app.catalog, visit.caller, export)
    return run_id, export or ""


async def _state(visit: Visit, run_id: str) -> RunState:
    status = await run_status(visit.durable, run_id)
    if status["runtime_status"] is None:
        raise NotFound(f"no run {run_id!r}")
    return RunState.from_json(status)


async def _report(visit: Visit, run_id: str) -> dict[str, Any] | None:
    return await asyncio.to_thread(visit.app.read_report, run_id)


@page(bp, "runs", durable=True, GET=CONNECTION_ROLES)
@_kept_out
async def console_runs(visit: Visit) -> Page:
    """Recent runs, newest first: of every export the caller may use, or of one
    (``?export=NAME``); ``?limit=N`` up to 100."""
    limit = runs_limit(visit.query("limit") or None)
    export = visit.query("export") or None
    catalog, caller = visit.app.catalog, visit.caller
    records = await visible_runs(catalog, visit.app.runs, caller, export, limit)
    states = await asyncio.gather(*(run_status(visit.durable, r.run_id) for r in records))
    lines = tuple(RunLine(r, RunState.from_json(s)) for r, s in zip(records, states, strict=True))
    exports = tuple(sorted(s.value.name or "" for s in await usable_exports(catalog, caller)))
    history = History(lines, export, exports, limit)
    title = f"Runs of {export}" if export else "Runs"
    return Page("runs.html", {"title": title, "history": history})


@page(bp, "runs/{run_id}", durable=True, GET=CONNECTION_ROLES)
@_kept_out
async def console_run(visit: Visit) -> Page:
    """A run: its status in words; while it runs, its progress (the page's script
    follows it); once ended, its report, its rejects and, for a mirror run waiting
    for confirmation, what it would remove and **Confirm removals**."""
    run_id, export = await _readable_run(visit)
    state = await _state(visit, run_id)
    report = await _report(visit, run_id) if state.ended else None
    confirmation = confirmation_of(report)
    if confirmation is not None and confirmation.lists and report is not None:
        names = await list_names(visit.app.accounts(), report.get("connection"))
        confirmation = confirmation_of(report, names)
    context = {
        "title": f"Run of {export}" if export else "Run",
        "run_id": run_id,
        "export": export,
        "state": state,
        "status": verdict(state, report),
        "facts": about(run_id, state, report),
        "live": progress_json(state, datetime.now(UTC)),
        "report": report_view(report) if report is not None else None,
        "confirmation": confirmation,
        "search": Query(),
    }
    return Page("run.html", context)


@page(bp, "runs/{run_id}/progress", durable=True, GET=CONNECTION_ROLES)
@_kept_out
async def console_run_progress(visit: Visit) -> func.HttpResponse:
    """What the run page's script polls: counts and words, never a contact."""
    run_id, _export = await _readable_run(visit)
    state = await _state(visit, run_id)
    body = orjson.dumps(progress_json(state, datetime.now(UTC)))
    return func.HttpResponse(
        body, status_code=200, mimetype="application/json", headers=dict(PAGE_HEADERS)
    )


@page(bp, "runs/{run_id}/rejects.csv", GET=CONNECTION_ROLES)
@_kept_out
async def console_run_rejects_file(visit: Visit) -> func.HttpResponse:
    """**Download rejects**: the run's rejects.csv, which holds email addresses, to the
    users of its connection only; never cached."""
    run_id, _export = await _readable_run(visit)
    store = stores.run_store(visit.app.config)
    report = await _report(visit, run_id)
    where = str(((report or {}).get("rejects") or {}).get("file") or "")
    body = await asyncio.to_thread(rejects_file, store, run_id, where)
    if body is None:
        raise NotFound(
            f"run {run_id} has no rejects file: it has not ended, or it stopped before it "
            "read its export"
        )
    # Who took a file of addresses, of which run, how large: never what it holds.
    log.info("rejects of run %s downloaded by %s (%d bytes)", run_id, visit.caller.id, len(body))
    headers = {
        **PAGE_HEADERS,
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{run_id}-rejects.csv"',
    }
    return func.HttpResponse(body, status_code=200, headers=headers)


@page(bp, "runs/{run_id}/rejects", GET=CONNECTION_ROLES, POST=CONNECTION_ROLES)
@_kept_out
async def console_run_rejects(visit: Visit) -> Page:
    """Search the run's rejects by email address or reason (POST: the address is
    never in a URL); each match's row, file, line and reason."""
    run_id, export = await _readable_run(visit)
    report = await _report(visit, run_id)
    if report is None:
        raise NotFound(f"run {run_id} has no report yet: its rejects are searched once it ends")
    search, error, found = Query(), "", None
    if visit.method == "POST":
        email, reason = visit.form.get("email"), visit.form.get("reason")
        search = Query(email.strip()[:300], reason)
        try:
            search = Query.of(email, reason)
        except InputError as exc:
            error = str(exc)
        else:
            store = stores.run_store(visit.app.config)
            found = await asyncio.to_thread(search_run, store, run_id, search)
            if found is None:
                error = "this run has no rejects file: no row of it was left out"
    context = {
        "title": f"Rejects of {export}" if export else "Rejects",
        "run_id": run_id,
        "export": export,
        "report": report_view(report),
        "search": search,
        "error": error,
        "found": found,
        "searched": visit.method == "POST",
    }
    return Page("run_rejects.html", context, 400 if error else 200)


@page(bp, "runs/{run_id}/confirm", durable=True, POST=CONNECTION_ROLES)
@_kept_out
async def console_run_confirm(visit: Visit) -> Page | Redirect:
    """**Confirm removals**: start the mirror run waiting for confirmation again with
    confirm_removals, as ``POST /api/exports/{name}/runs`` does; then its page."""
    run_id, export = await _readable_run(visit)
    report = await _report(visit, run_id)
    app = visit.app
    try:
        started = await confirm_removals(
            run_id=run_id,
            report=report,
            caller=visit.caller,
            catalog=app.catalog,
            runs=app.runs,
            inbox=app.inbox,
            launcher=app.launcher(visit.durable),
        )
    except NotReady as exc:
        stored = await app.catalog.export(export)
        connection = stored.value.connection if stored else None
        fix = (
            Action(f"Open connection {connection}", console_path(f"connections/{connection}"))
            if connection
            else None
        )
        shown = problem(409, str(exc), console=console_path(), action=fix)
        return Page("problem.html", {"title": shown.title, "problem": shown}, 409)
    return Redirect(f"runs/{started.run_id}")
