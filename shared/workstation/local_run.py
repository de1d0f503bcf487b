"""One export run in this process: the function app's orchestrator and activities, on the
local Durable Task engine.

This is what ``ccexport run``, ``make run``, the end-to-end tests and the benchmark
use. Nothing is ported: the ``segment_export`` generator and the four activity
functions are imported from functions/ and registered on :class:`LocalEngine` as
they are; only the ``RunActivities`` behind them is this process's own (built from
the environment by the caller). functions/ is imported lazily, here only, so the
rest of shared/ never loads azure.functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import CcexportError
from shared.runs.activities import RunActivities
from shared.runs.contract import ORCHESTRATOR, RunInput, RunOutcome

if TYPE_CHECKING:
    from shared.workstation.local_engine import LocalEngine

ProgressCallback = Callable[[dict[str, Any]], None]
"""Told each new custom status of the run (see shared/runs/contract.py)."""


class RunFailed(CcexportError):
    """The orchestration itself failed (its report could not be written)."""


@dataclass(frozen=True)
class LocalRunResult:
    outcome: RunOutcome
    report: dict[str, Any] | None


def app_engine(*, activity_concurrency: int, orchestration_concurrency: int = 2) -> LocalEngine:
    """A local engine with the function app's orchestrator and activities registered.

    The activities are registered as the decorated objects the orchestrator passes to
    ``call_activity``, so it reaches them by identity, as on Durable Functions.
    """
    from functions import activities as bindings  # noqa: PLC0415 - see the module docstring
    from functions.orchestrator import SEGMENT_EXPORT  # noqa: PLC0415
    from shared.workstation.local_engine import LocalEngine  # noqa: PLC0415 - durabletask: dev only

    engine = LocalEngine(
        activity_concurrency=activity_concurrency,
        orchestration_concurrency=orchestration_concurrency,
    )
    generator = SEGMENT_EXPORT.build().get_user_function().orchestrator_function
    engine.register_orchestrator(ORCHESTRATOR, generator)
    for name, activity in bindings.ACTIVITIES.items():
        engine.register_activity(name, activity)
    return engine


def run_locally(
    run: RunInput,
    activities: RunActivities,
    *,
    timeout: float,
    on_progress: ProgressCallback | None = None,
) -> LocalRunResult:
    """Run ``run`` to its end on a fresh local engine; returns its outcome and report.

    The engine keeps nothing after it closes: what a run with the same id finds again
    (staged bodies, marks of accepted imports) is in the run store. ``activities`` is
    closed with the engine (its HTTP session and secret store belong to its loop).
    """
    from functions import activities as bindings  # noqa: PLC0415 - see the module docstring

    engine = app_engine(activity_concurrency=run.options.upload_window + 1)
    engine.on_close(activities.aclose)
    previous = bindings.install(activities)
    try:
        with engine:
            started = engine.start(ORCHESTRATOR, run.to_json(), instance_id=run.run_id)

            def progress(state: Any) -> None:
                if on_progress is not None and isinstance(state.custom_status, dict):
                    on_progress(state.custom_status)

            state = engine.wait(started.instance_id, timeout, on_progress=progress)
    finally:
        bindings.install(previous)
    if state.output is None:
        raise RunFailed(f"run {run.run_id} failed: {state.failure or state.status.value}")
    outcome = RunOutcome.from_json(state.output)
    report = activities.services.runs.read_report(run.run_id)
    return LocalRunResult(outcome, report)
