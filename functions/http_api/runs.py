"""Runs: start one now, list recent ones, read one's status and report.

Which runs a caller may see and what a start may ask for are shared.runs.access's
rules; starting is shared.runs.launcher's, on the Durable client bound here.

A start answers with this app's own status route, never Durable's management URLs:
those carry the extension's system key, which reads, terminates, purges and starts
any orchestration with any input, whoever holds it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions.http_api.routes import CONNECTION_ROLES, Call, app_path, json_answer, route
from shared.exports.access import require_use
from shared.exports.catalog import NotFound
from shared.runs.access import (
    TERMINAL,
    not_started,
    require_run_reader,
    run_request,
    runs_limit,
    visible_runs,
)
from shared.runs.contract import status_in
from shared.runs.launcher import Outcome, RunStart
from shared.segments.inbox import export_of_run

bp = df.Blueprint()


def status_url(run_id: str) -> str:
    """Where a run's status, progress and report are read: ``GET /api/runs/{id}``."""
    return app_path(f"runs/{run_id}")


def _start_json(result: RunStart) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "run_id": result.run_id,
        "outcome": result.outcome.value,
        "source": result.source,
        "status_url": status_url(result.run_id),
    }
    if result.outcome is not Outcome.STARTED:
        doc["runtime_status"] = result.status
    return doc


@route(bp, "exports/{name}/runs", durable=True, POST=CONNECTION_ROLES)
async def export_runs(call: Call) -> func.HttpResponse:
    """Start a run now: 202 with ``Location: /api/runs/{id}`` and the run's own status
    link; 409 if that run is already running.

    The body may hold ``folder`` (a run folder path), ``force`` (send a finished run
    again), ``full`` (send every contact, not only new and changed ones) and
    ``confirm_removals`` (a mirror run that stopped with ``needs_confirmation`` may
    remove past the definition's ``max_removal_share``; it restarts that run).
    """
    request = run_request(call.body(optional=True))
    catalog = call.app.catalog
    definition = (await catalog.require_export(call.param("name"))).value
    await require_use(catalog, call.caller, definition)
    results = await call.app.launcher(call.durable).run_now(
        definition,
        folder_path=request.folder,
        force=request.force,
        options=request.options,
        caller=call.caller,
    )
    started = [r for r in results if r.outcome is Outcome.STARTED]
    runs = [_start_json(r) for r in results]
    if not started:
        return json_answer(409, {"error": not_started(results[0]), "runs": runs})
    location = {"Location": status_url(started[0].run_id)}
    if len(results) == 1:
        return json_answer(202, {"id": started[0].run_id, **runs[0]}, location)
    return json_answer(202, {"runs": runs}, location)


def run_outcome(runtime: str | None, custom: Any, output: Any) -> str | None:
    """The run's own status: its output's once it ended, else its progress's, else what
    Durable says (``pending``, ``running``; ``failed`` for a run that broke off). A run
    that failed stays ``Completed`` to Durable (it ended, after its report), so this,
    not ``runtime_status``, says whether it worked."""
    found = status_in(output, custom)
    if found is not None:
        return found
    if runtime is None:
        return None
    return "failed" if runtime in ("Failed", "Terminated") else runtime.lower()


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


async def run_status(client: df.DurableOrchestrationClient, run_id: str) -> dict[str, Any]:
    """A run's Durable status as the API answers it (the console reads it the same way):
    ``status`` (the run's own, shared/runs/contract.py: what a script should read),
    ``runtime_status`` (Durable's; None: no such run), ``custom_status`` (its progress),
    times, output."""
    status = await client.get_status(run_id)
    runtime = status.runtime_status if status else None
    return {
        "status": run_outcome(
            runtime.value if runtime is not None else None,
            status.custom_status if status else None,
            status.output if status and runtime is not None else None,
        ),
        "runtime_status": runtime.value if runtime is not None else None,
        "custom_status": status.custom_status if status else None,
        "created_time": _iso(status.created_time) if status else None,
        "last_updated_time": _iso(status.last_updated_time) if status else None,
        "output": status.output if status and runtime is not None else None,
    }


@route(bp, "runs", durable=True, GET=CONNECTION_ROLES)
async def runs_list(call: Call) -> func.HttpResponse:
    """Recent runs (``?export=NAME``; ``&limit=N``, at most 100), newest first."""
    limit = runs_limit(call.req.params.get("limit"))
    export = call.req.params.get("export")
    records = await visible_runs(call.app.catalog, call.app.runs, call.caller, export, limit)
    runs = [{**r.to_json(), **await run_status(call.durable, r.run_id)} for r in records]
    for run in runs:
        run.pop("output", None)  # the list stays small; GET /api/runs/{id} has it
    return json_answer(200, {"runs": runs})


@route(bp, "runs/{run_id}", durable=True, GET=CONNECTION_ROLES)
async def run_item(call: Call) -> func.HttpResponse:
    """A run's status and progress, and its report once it has finished."""
    run_id = call.param("run_id")
    export = export_of_run(run_id)
    await require_run_reader(call.app.catalog, call.caller, export)
    status = await run_status(call.durable, run_id)
    if status["runtime_status"] is None:
        raise NotFound(f"no run {run_id!r}")
    report = None
    if status["runtime_status"] in TERMINAL:
        report = await asyncio.to_thread(call.app.read_report, run_id)
    return json_answer(200, {"run_id": run_id, "export": export, **status, "report": report})
