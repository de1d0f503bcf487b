"""Run now from the console: why a run did not start, in words, with the fix's link.

Starting is shared.runs.launcher's (``run_now``, with the caller, as
``POST /api/exports/{name}/runs``); its refusals are the launcher's own sentences. This
module only says, for each kind, which page fixes it: the connection's page (consent,
not connected, needs reconnecting), the export's page (no segments, no complete run
folder, a list or custom field the account lacks), or the run's page (it is running,
or these files were sent already).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.console.wording import Action, Problem, problem
from shared.errors import CcexportError, InputError
from shared.exports.definitions import ExportDefinition
from shared.runs.launcher import NotReady, Outcome, RunStart


@dataclass(frozen=True)
class Refusal:
    """A run that did not start: the problem shown, and whether Send again may help."""

    problem: Problem
    send_again: bool = False


def start_refused(exc: CcexportError, definition: ExportDefinition, console: str) -> Refusal:
    """The page for an error ``run_now`` raised: NotReady (the connection), else input to
    fix in the export (no segments, no complete folder, a list or field the account
    lacks)."""
    if isinstance(exc, NotReady):
        connection = definition.connection or ""
        action = Action("Open the connection", f"{console}connections/{connection}")
        return Refusal(problem(409, str(exc), console=console, action=action))
    status = 400 if isinstance(exc, InputError) else 409
    action = Action("Edit the export", f"{console}exports/{definition.name}")
    return Refusal(problem(status, str(exc), console=console, action=action))


def not_started(result: RunStart, console: str) -> Refusal:
    """The page for a start that found its run running, or done."""
    watch = Action("Open the run", f"{console}runs/{result.run_id}")
    if result.outcome is Outcome.RUNNING:
        detail = (
            f"Run {result.run_id} is already running on these files; it was not started "
            "again. Its page shows how far it is."
        )
        return Refusal(problem(409, detail, console=console, action=watch))
    detail = (
        f"Run {result.run_id} already sent these files: the same files make the same run, "
        "and Customer Insights' next export starts a new one. Send again starts it once more."
    )
    return Refusal(problem(409, detail, console=console, action=watch), send_again=True)


def first_started(results: list[RunStart]) -> RunStart | None:
    return next((r for r in results if r.outcome is Outcome.STARTED), None)
