"""The Durable Functions HTTP API of ``serve``, over the in-process Durable Task engine.

The app's HTTP functions and triggers get a real ``DurableOrchestrationClient``, made
from the binding JSON the Functions host would pass; it calls these routes as it calls
the Durable extension in Azure: start an orchestration under an instance id, read an
instance's status. A started run answers with the app's own ``/api/runs/{id}``, as in
Azure, never with these routes; they need no key because serve listens on loopback
only, for the person at this machine.

Starting follows host.json's ``overridableExistingInstanceStates: NonRunningStates``:
an instance that is pending or running refuses a new start; any other is replaced.
Purging by filter (the app's daily history purge) deletes ended instances only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from durabletask.client import OrchestrationStatus

from shared.workstation.local_engine import LocalEngine, RunState, RuntimeStatus

WEBHOOKS = "/runtime/webhooks/durabletask"
TASK_HUB = "ccexport"
_ACTIVE = frozenset({RuntimeStatus.PENDING, RuntimeStatus.RUNNING})
_ENDED = {
    RuntimeStatus.COMPLETED.value: OrchestrationStatus.COMPLETED,
    RuntimeStatus.FAILED.value: OrchestrationStatus.FAILED,
    RuntimeStatus.TERMINATED.value: OrchestrationStatus.TERMINATED,
}


def _iso(value: datetime | None) -> str | None:
    """UTC with its offset, as the extension writes times (the engine's are naive UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _moment(raw: str | None) -> datetime | None:
    """A time in a management URL's query (the SDK writes UTC with a literal Z)."""
    return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None


def _input(raw: str) -> Any:
    """A request's JSON payload; the SDK sends its input JSON-encoded as a string."""
    payload: Any = json.loads(raw) if raw.strip() else None
    return json.loads(payload) if isinstance(payload, str) else payload


def status_json(state: RunState) -> dict[str, Any]:
    """An instance's status as the Durable extension's status endpoint answers it."""
    return {
        "name": state.name,
        "instanceId": state.instance_id,
        "runtimeStatus": state.status.value,
        "customStatus": state.custom_status,
        "output": state.output if state.output is not None else state.failure,
        "createdTime": _iso(state.created_at),
        "lastUpdatedTime": _iso(state.last_updated_at),
    }


def client_binding(
    hooks: str, rpc_base: str, query: str, required: str = "", task_hub: str = TASK_HUB
) -> str:
    """A durable client binding's JSON, as the Functions host passes it to a function.

    ``hooks`` is the extension's webhook base (the management URLs start there),
    ``rpc_base`` where the client starts and reads instances, ``query`` what every
    management URL carries (``taskHub=…``, and in Azure the system key).
    """
    instance = f"{hooks}/instances/INSTANCEID"
    return json.dumps(
        {
            "taskHubName": task_hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{hooks}/orchestrators/{{functionName}}"
                f"[/{{instanceId}}]?{query}",
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{instance}?{query}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
                "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
                "purgeHistoryDeleteUri": f"{instance}?{query}",
                "restartPostUri": f"{instance}/restart?{query}",
                "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
                "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
            },
            "baseUrl": hooks,
            "requiredQueryStringParameters": required,
            "rpcBaseUrl": rpc_base,
            "httpBaseUrl": "",
        }
    )


class DurableApi:
    """Routes under ``/runtime/webhooks/durabletask`` backed by a :class:`LocalEngine`."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        self.started: set[str] = set()
        """Instance ids started here, so a stop can wait for the ones still running."""
        self.base_url = ""
        """``http://127.0.0.1:PORT``, set once the server listens."""

    def routes(self) -> Iterable[web.RouteDef]:
        instance = WEBHOOKS + "/instances/{instance_id}"
        return (
            web.post(WEBHOOKS + "/orchestrators/{name}/{instance_id}", self._start),
            web.get(instance, self._status),
            web.delete(instance, self._purge),
            web.delete(WEBHOOKS + "/instances/", self._purge_ended),
            web.post(instance + "/{action}", self._manage),
            web.post(instance + "/raiseEvent/{event}", self._raise_event),
        )

    async def _start(self, request: web.Request) -> web.Response:
        name, instance_id = request.match_info["name"], request.match_info["instance_id"]
        try:
            payload = _input(await request.text())
        except ValueError:
            return web.json_response({"ExceptionMessage": "the input is not JSON"}, status=400)
        try:
            result = await asyncio.to_thread(self._start_now, name, instance_id, payload)
        except LookupError as exc:
            return web.json_response({"ExceptionMessage": str(exc)}, status=400)
        if not result:
            message = f"An Orchestration instance with the ID {instance_id} is already running."
            return web.json_response({"Message": message}, status=409)
        self.started.add(instance_id)
        return web.json_response({"id": instance_id}, status=202)

    async def _known(self, instance_id: str) -> RunState | None:
        return await asyncio.to_thread(self.engine.status, instance_id)

    async def _manage(self, request: web.Request) -> web.Response:
        """terminate, suspend and resume, as the extension's management URLs do them."""
        instance_id, action = request.match_info["instance_id"], request.match_info["action"]
        calls: dict[str, Callable[[str], object]] = {
            "terminate": self.engine.client.terminate_orchestration,
            "suspend": self.engine.client.suspend_orchestration,
            "resume": self.engine.client.resume_orchestration,
        }
        if action not in calls:
            message = f"{action} is not offered by ccexport serve's local engine"
            return web.json_response({"Message": message}, status=501)
        state = await self._known(instance_id)
        if state is None:
            return web.json_response({"Message": f"No instance {instance_id}."}, status=404)
        if state.status.is_terminal:
            return web.json_response({"Message": f"{instance_id} has ended."}, status=410)
        await asyncio.to_thread(calls[action], instance_id)
        return web.Response(status=202)

    async def _raise_event(self, request: web.Request) -> web.Response:
        instance_id, event = request.match_info["instance_id"], request.match_info["event"]
        try:
            data = _input(await request.text())
        except ValueError:
            return web.json_response({"Message": "the event data is not JSON"}, status=400)
        state = await self._known(instance_id)
        if state is None:
            return web.json_response({"Message": f"No instance {instance_id}."}, status=404)
        if state.status.is_terminal:
            return web.json_response({"Message": f"{instance_id} has ended."}, status=410)
        raise_event = self.engine.client.raise_orchestration_event
        await asyncio.to_thread(raise_event, instance_id, event, data=data)
        return web.Response(status=202)

    async def _purge(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        state = await self._known(instance_id)
        if state is None:
            return web.json_response({"Message": f"No instance {instance_id}."}, status=404)
        if not state.status.is_terminal:
            message = f"{instance_id} is still running; terminate it first."
            return web.json_response({"Message": message}, status=409)
        await asyncio.to_thread(self.engine.client.purge_orchestration, instance_id)
        return web.json_response({"instancesDeleted": 1})

    async def _purge_ended(self, request: web.Request) -> web.Response:
        """Purge by filter: ended instances created in [createdTimeFrom, createdTimeTo)
        whose status is one of ``runtimeStatus`` (all ended ones when none is named)."""
        query = request.query
        try:
            since, before = (
                _moment(query.get(name)) for name in ("createdTimeFrom", "createdTimeTo")
            )
            names = [name for name in query.get("runtimeStatus", "").split(",") if name]
            statuses = [_ENDED[name] for name in names] or list(_ENDED.values())
        except (KeyError, ValueError):
            message = "createdTimeFrom/To must be ISO times, runtimeStatus ended statuses"
            return web.json_response({"Message": message}, status=400)
        purge = self.engine.client.purge_orchestrations_by
        result = await asyncio.to_thread(purge, since, before, statuses)
        return web.json_response({"instancesDeleted": result.deleted_instance_count})

    def _start_now(self, name: str, instance_id: str, payload: Any) -> bool:
        existing = self.engine.status(instance_id)
        if existing is not None and existing.status in _ACTIVE:
            return False
        started = self.engine.start(name, payload, instance_id=instance_id, replace_completed=True)
        return started.started

    async def _status(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        state = await asyncio.to_thread(self.engine.status, instance_id)
        if state is None:
            return web.json_response(
                {"Message": f"No instance with ID {instance_id} was found."}, status=404
            )
        code = 202 if state.status in _ACTIVE else 200
        return web.json_response(status_json(state), status=code)

    def binding_json(self) -> str:
        """The durable client binding's JSON, as the host passes it to a function."""
        hooks = f"{self.base_url}{WEBHOOKS}"
        return client_binding(hooks, f"{hooks}/", f"taskHub={TASK_HUB}&connection=Storage")

    def running(self) -> list[str]:
        """Instances started here that have not ended (blocking: call in a thread)."""
        active: list[str] = []
        for instance_id in sorted(self.started):
            state = self.engine.status(instance_id)
            if state is not None and not state.status.is_terminal:
                active.append(instance_id)
        return active

    def wait_for_running(self, grace: float, hurry: threading.Event) -> list[str]:
        """Wait up to ``grace`` seconds, or until ``hurry`` is set, for the runs started
        here to end; returns the ones still running then (blocking: call in a thread)."""
        deadline = time.monotonic() + grace
        active = self.running()
        while active and time.monotonic() < deadline and not hurry.is_set():
            with contextlib.suppress(TimeoutError):
                self.engine.wait(active[0], min(0.5, max(0.05, deadline - time.monotonic())))
            active = self.running()
        return active
