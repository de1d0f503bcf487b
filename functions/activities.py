"""The export run's activities: bindings only; what they do is shared/runs/activities.py.

Each takes and returns plain JSON (shared/runs/contract.py). They share one ``RunActivities``
per worker process, built from the app settings on first use, so its HTTP session,
token cache and request pacer serve every activity of the process. The local runner
installs its own (:func:`install`) before it registers these same functions on the
local engine.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from azure.durable_functions import Blueprint

from shared.runs.activities import RunActivities, RunServices

bp = Blueprint()

_current: RunActivities | None = None
_building = threading.Lock()  # activities start together on several threads


def run_activities() -> RunActivities:
    """The process's activities, built from the app settings the first time."""
    global _current  # noqa: PLW0603 - one per worker process, like its connections
    with _building:
        if _current is None:
            _current = RunActivities(RunServices.from_env(os.environ))
        return _current


def install(activities: RunActivities | None) -> RunActivities | None:
    """Serve the activities from ``activities`` (None: from the app settings again).

    Returns what was installed before, so a caller can put it back.
    """
    global _current
    previous, _current = _current, activities
    return previous


def prepare_segment(run: dict[str, Any]) -> dict[str, Any]:
    return run_activities().prepare_segment(run)


async def upload_chunk(request: dict[str, Any]) -> dict[str, Any]:
    return await run_activities().upload_chunk(request)


async def poll_imports(request: dict[str, Any]) -> dict[str, Any]:
    return await run_activities().poll_imports(request)


def finish_run(request: dict[str, Any]) -> dict[str, Any]:
    return run_activities().finish_run(request)


async def find_members(run: dict[str, Any]) -> dict[str, Any]:
    return await run_activities().find_members(run)


async def apply_removals(run: dict[str, Any]) -> dict[str, Any]:
    return await run_activities().apply_removals(run)


PREPARE_SEGMENT = bp.activity_trigger(input_name="run")(prepare_segment)
UPLOAD_CHUNK = bp.activity_trigger(input_name="request")(upload_chunk)
POLL_IMPORTS = bp.activity_trigger(input_name="request")(poll_imports)
FINISH_RUN = bp.activity_trigger(input_name="request")(finish_run)
FIND_MEMBERS = bp.activity_trigger(input_name="run")(find_members)
APPLY_REMOVALS = bp.activity_trigger(input_name="run")(apply_removals)

ACTIVITIES: dict[str, Any] = {
    "prepare_segment": PREPARE_SEGMENT,
    "upload_chunk": UPLOAD_CHUNK,
    "poll_imports": POLL_IMPORTS,
    "finish_run": FINISH_RUN,
    "find_members": FIND_MEMBERS,
    "apply_removals": APPLY_REMOVALS,
}
"""Activity name -> the decorated activity, as the function app registers it."""
