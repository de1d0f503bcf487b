"""One export run in this process: the function app's orchestrator and activities, on the
local Durable Task engine.

This is what ``ccexport run``, ``make run``, the end-to-end tests and the benchmark
use. Nothing is ported: the ``segment_export`` generator is imported from functions/
and registered on :class:`LocalEngine` as it is, its activity calls routed to this
process's own ``RunActivities`` (built by the caller through shared.wiring).
functions/ is imported lazily, here only, so the rest of shared/ never loads
azure.functions.
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


def app_engine(
    *,
    activity_concurrency: int,
    orchestration_concurrency: int = 2,
    activities: RunActivities | None = None,
) -> LocalEngine:
    """A local engine with the function app's orchestrator and activities registered.

    The orchestrator reaches its activities by the decorated objects it passes to
    ``call_activity``, as on Durable Functions. With ``activities``, those calls run
    that object's methods of the same names (``ccexport run``: this process's
    services); without, the app's own activity functions (``ccexport serve``).
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
    for name, binding in bindings.ACTIVITIES.items():
        if activities is None:
            engine.register_activity(name, binding)
        else:
            engine.register_activity(name, getattr(activities, name), called_as=binding)
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
    engine = app_engine(activity_concurrency=run.options.upload_window + 1, activities=activities)
    engine.on_close(activities.aclose)
    with engine:
        started = engine.start(ORCHESTRATOR, run.to_json(), instance_id=run.run_id)

        def progress(state: Any) -> None:
            if on_progress is not None and isinstance(state.custom_status, dict):
                on_progress(state.custom_status)

        state = engine.wait(started.instance_id, timeout, on_progress=progress)
    if state.output is None:
        raise RunFailed(f"run {run.run_id} failed: {state.failure or state.status.value}")
    outcome = RunOutcome.from_json(state.output)
    report = activities.services.runs.read_report(run.run_id)
    return LocalRunResult(outcome, report)
