"""The export run's activities: bindings only; what they do is shared/runs/activities.py.

Each takes and returns plain JSON (shared/runs/contract.py). They share one
``RunActivities`` per worker process, built by shared.wiring from the app settings on
first use, so its HTTP session, token cache and request pacer serve every activity of
the process. Their names are the contract's constants, which the orchestrator's
calls resolve to through these decorated objects.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from azure.durable_functions import Blueprint

from shared.config import Config
from shared.runs import contract
from shared.runs.activities import RunActivities
from shared.wiring import clients

bp = Blueprint()

_current: RunActivities | None = None
_building = threading.Lock()  # activities start together on several threads


def run_activities() -> RunActivities:
    """The process's activities, built from the app settings the first time."""
    global _current  # noqa: PLW0603 - one per worker process, like its connections
    with _building:
        if _current is None:
            _current = RunActivities(
                clients.run_services(Config.from_mapping(os.environ), confined=True)
            )
        return _current


def install(activities: RunActivities | None) -> RunActivities | None:
    """Serve the activities from ``activities`` (None: from the app settings again).

    For tests that call these bindings as the host would, with services of their own,
    and for ``ccexport serve``'s stop, which closes what the process built. Returns
    what was installed before, so a caller can put it back.
    """
    global _current
    with _building:
        previous, _current = _current, activities
    return previous


async def prepare_segment(run: dict[str, Any]) -> dict[str, Any]:
    return await run_activities().prepare_segment(run)


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


async def quota_left(request: dict[str, Any]) -> dict[str, Any]:
    return await run_activities().quota_left(request)


def _activity(name: str, function: Any, input_name: str) -> Any:
    """Register ``function`` under the contract's name for it."""
    return bp.function_name(name)(bp.activity_trigger(input_name=input_name)(function))


PREPARE_SEGMENT = _activity(contract.PREPARE_SEGMENT, prepare_segment, "run")
UPLOAD_CHUNK = _activity(contract.UPLOAD_CHUNK, upload_chunk, "request")
POLL_IMPORTS = _activity(contract.POLL_IMPORTS, poll_imports, "request")
FINISH_RUN = _activity(contract.FINISH_RUN, finish_run, "request")
FIND_MEMBERS = _activity(contract.FIND_MEMBERS, find_members, "run")
APPLY_REMOVALS = _activity(contract.APPLY_REMOVALS, apply_removals, "run")
QUOTA_LEFT = _activity(contract.QUOTA_LEFT, quota_left, "request")

ACTIVITIES: dict[str, Any] = {
    contract.PREPARE_SEGMENT: PREPARE_SEGMENT,
    contract.UPLOAD_CHUNK: UPLOAD_CHUNK,
    contract.POLL_IMPORTS: POLL_IMPORTS,
    contract.FINISH_RUN: FINISH_RUN,
    contract.FIND_MEMBERS: FIND_MEMBERS,
    contract.APPLY_REMOVALS: APPLY_REMOVALS,
    contract.QUOTA_LEFT: QUOTA_LEFT,
}
"""Activity name -> the decorated activity, as the function app registers it."""
