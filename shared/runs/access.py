"""What a caller may ask of runs: which runs they may see, and what a start may say.

A run belongs to the export definition it was started for, and whoever may use
that definition's connection may see it (shared.exports.access). Runs whose
definition is gone, or that belong to none, only an admin may see: their
connection, and so who else may see them, can no longer be told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.errors import InputError
from shared.exports.access import Caller, connection_of, require_use
from shared.exports.catalog import Catalog
from shared.runs.contract import RunOptions
from shared.runs.index import RunIndex, RunRecord
from shared.runs.launcher import Outcome, RunStart

MAX_RUNS = 100
"""The most runs one listing answers."""
DEFAULT_RUNS = 20
TERMINAL = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
"""Runtime statuses after which a run has its report."""
_FLAGS = ("force", "full", "confirm_removals")


@dataclass(frozen=True)
class RunRequest:
    """A request to start a run now."""

    folder: str | None = None
    """A run folder path in the inbox; None for the export's latest."""
    force: bool = False
    """Send a run that was already sent."""
    options: RunOptions | None = None
    """None when nothing differs from the defaults."""


def run_request(body: Any) -> RunRequest:
    """Read a start's body: ``folder``, ``force``, ``full`` and ``confirm_removals``,
    each optional, nothing else."""
    if not isinstance(body, dict) or set(body) - {"folder", *_FLAGS}:
        raise InputError(
            'the body may hold "folder" (a run folder path), "force", "full" and "confirm_removals"'
        )
    folder = body.get("folder")
    if folder is not None and not isinstance(folder, str):
        raise InputError('"folder" must be a path in the inbox container')
    for flag in _FLAGS:
        if not isinstance(body.get(flag, False), bool):
            raise InputError(f'"{flag}" must be true or false')
    options = RunOptions(
        full=body.get("full", False), confirm_removals=body.get("confirm_removals", False)
    )
    return RunRequest(
        folder=folder,
        force=body.get("force", False),
        options=options if options != RunOptions() else None,
    )


def not_started(result: RunStart) -> str:
    """Why a start that started nothing did not: the run runs, or was sent."""
    why = (
        "is already running"
        if result.outcome is Outcome.RUNNING
        else 'was already sent; send {"force": true} to send it again'
    )
    return f"run {result.run_id} {why}"


def runs_limit(raw: str | None) -> int:
    """How many runs a listing asks for (a query parameter; DEFAULT_RUNS if absent)."""
    try:
        limit = int(DEFAULT_RUNS if raw is None else raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_RUNS:
        raise InputError(f"limit must be a whole number from 1 to {MAX_RUNS}")
    return limit


async def visible_runs(
    catalog: Catalog, runs: RunIndex, caller: Caller, export: str | None, limit: int
) -> list[RunRecord]:
    """The latest runs of one export, or of every export the caller may use, newest
    first."""
    if export is not None:
        stored = await catalog.export(export)
        if stored is not None:
            await require_use(catalog, caller, stored.value)
        else:
            caller.require_admin("list the runs of a deleted export")
        return await runs.recent(export, limit)
    records: list[RunRecord] = []
    for stored in await catalog.exports():
        if caller.may_use(await connection_of(catalog, stored.value)):
            records += await runs.recent(stored.value.name or "", limit)
    return sorted(records, key=lambda r: r.requested_at, reverse=True)[:limit]


async def require_run_reader(catalog: Catalog, caller: Caller, export: str | None) -> None:
    """Refuse a caller who may not see the runs of ``export`` (the export a run id
    names, None if it names none)."""
    stored = await catalog.export(export) if export else None
    if stored is not None:
        await require_use(catalog, caller, stored.value)
    else:
        caller.require_admin("read runs that belong to no export definition")
