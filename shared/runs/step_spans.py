"""The span each activity of a run opens, so the Constant Contact requests under it
are found by the run's id (shared/telemetry/spans.py).

Activities take the contract's JSON (shared/runs/contract.py, uploads.py): a run's
input, or a request that names the run (``run_id``) or carries it whole (``run``).
The span takes the run id, the connection and the export's name from it, which are
names the app or an admin chose; nothing else of the input.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from shared.telemetry.spans import step_span

Method = TypeVar("Method", bound=Callable[..., Any])


def run_names(data: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The run id, and the connection and export names, an activity's input holds."""
    nested = data.get("run")
    run: Mapping[str, Any] = nested if isinstance(nested, Mapping) else data
    names: dict[str, str] = {}
    connection = run.get("connection")
    if isinstance(connection, str):
        names["connection"] = connection
    export = run.get("export")
    if isinstance(export, Mapping) and isinstance(export.get("name"), str):
        names["export"] = export["name"]
    run_id = run.get("run_id")
    return (run_id if isinstance(run_id, str) else ""), names


def traced(method: Method) -> Method:
    """Run an activity method (``self, data``) inside its step's span."""
    step = method.__name__
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def in_span_async(self: Any, data: Mapping[str, Any]) -> Any:
            run_id, names = run_names(data)
            with step_span(step, run_id, **names):
                return await cast(Callable[..., Awaitable[Any]], method)(self, data)

        return cast(Method, in_span_async)

    @functools.wraps(method)
    def in_span(self: Any, data: Mapping[str, Any]) -> Any:
        run_id, names = run_names(data)
        with step_span(step, run_id, **names):
            return method(self, data)

    return cast(Method, in_span)
