"""Call the function app's handlers without a Functions host, with real binding objects.

- ``DurableFake``: a small aiohttp server on 127.0.0.1 speaking the part of the
  Durable Functions HTTP management API that a client binding uses (start an
  orchestration under an instance id, read an instance's status, purge the history of
  instances by creation time and status), and a real
  ``DurableOrchestrationClient`` built from the binding JSON that points at it. It
  starts over an existing instance as host.json's
  ``extensions.durableTask.overridableExistingInstanceStates`` says, as the host does.
- ``blob_binding``: the ``BlobClient`` the blob extension's converter makes from the
  model binding data the host sends for an Event Grid blob trigger.
- ``timer_request``: a ``TimerRequest`` decoded from the JSON the host sends.
- ``http_request``: a ``func.HttpRequest``; ``principal`` an Easy Auth header.
- ``AppEnv``: the app settings of one test (its own containers in Azurite, its own
  CCEXPORT_HOME), and blob helpers to write Customer Insights run folders.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from aiohttp import web
from azure.durable_functions.models.utils import http_utils
from azure.functions import meta
from azure.functions.timer import TimerRequestConverter
from azure.storage.blob import BlobServiceClient, ContainerClient
from azurefunctions.extensions.base import Datum
from azurefunctions.extensions.bindings.blob import BlobClient, BlobClientConverter

from shared.workstation.serve.durable import client_binding
from tests.support.services import ROOT

SYSTEM_KEY = "durable-system-key-for-tests"
TASK_HUB = "ccexporttests"
HOST_JSON = ROOT / "host.json"
NON_RUNNING_STATES = "NonRunningStates"
ANY_STATE = "AnyState"  # the extension's default (OverridableStates.AnyState = 0)


def overridable_states(host_json: Path = HOST_JSON) -> str:
    """host.json's ``extensions.durableTask.overridableExistingInstanceStates``, or the
    extension's default, ``AnyState``, when it is not set."""
    document = json.loads(host_json.read_text(encoding="utf-8"))
    durable = document.get("extensions", {}).get("durableTask", {})
    return str(durable.get("overridableExistingInstanceStates", ANY_STATE))


@dataclass
class Instance:
    name: str
    instance_id: str
    input: Any
    runtime_status: str = "Pending"
    custom_status: Any = None
    output: Any = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class DurableFake:
    """The Durable extension's management endpoints, as far as a client binding uses them.

    Starting under an existing instance id follows ``host_json`` (the app's host.json
    unless a test names another): with ``NonRunningStates`` a start over a Pending or
    Running instance is answered with an error, as the host answers it; with
    ``AnyState`` (or nothing set) it replaces the instance.
    """

    def __init__(self, host_json: Path = HOST_JSON) -> None:
        self.instances: dict[str, Instance] = {}
        self.starts: list[Instance] = []
        self.refused: list[str] = []
        self.purges: list[dict[str, str]] = []
        """The query of each purge-by-filter request, as sent."""
        self.overridable_states = overridable_states(host_json)
        self.status_barrier = 0
        """Hold the first status reads until this many have arrived (at most 5 s): callers
        that arrive together all look before any of them starts (0: no holding)."""
        self._arrived = 0
        self._all_arrived: asyncio.Event | None = None
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    @property
    def refuse_running(self) -> bool:
        """Whether a start over a Pending or Running instance fails (host.json says so)."""
        return self.overridable_states.casefold() == NON_RUNNING_STATES.casefold()

    @refuse_running.setter
    def refuse_running(self, value: bool) -> None:
        # Host.json decides; a test may only say what it expects of it.
        if value != self.refuse_running:
            raise ValueError(
                f"host.json says overridableExistingInstanceStates: {self.overridable_states}; "
                "the fake follows it (pass another host_json to DurableFake to differ)"
            )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/durabletask/orchestrators/{name}/{instance_id}", self._start)
        app.router.add_get("/durabletask/instances/{instance_id}", self._status)
        app.router.add_delete("/durabletask/instances/", self._purge)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        # The SDK keeps one module-level aiohttp session; it belongs to this test's loop.
        await http_utils._close_session()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _start(self, request: web.Request) -> web.Response:
        raw = await request.json()
        existing = self.instances.get(request.match_info["instance_id"])
        if self.refuse_running and existing and existing.runtime_status in {"Pending", "Running"}:
            self.refused.append(existing.instance_id)
            message = f"An Orchestration instance with the status {existing.runtime_status} "
            return web.json_response({"Message": message + "already exists."}, status=500)
        instance = Instance(
            request.match_info["name"],
            request.match_info["instance_id"],
            json.loads(raw) if isinstance(raw, str) else raw,
        )
        self.instances[instance.instance_id] = instance
        self.starts.append(instance)
        return web.json_response({"id": instance.instance_id}, status=202)

    async def _status(self, request: web.Request) -> web.Response:
        if self.status_barrier:
            if self._all_arrived is None:
                self._all_arrived = asyncio.Event()
            self._arrived += 1
            if self._arrived >= self.status_barrier:
                self._all_arrived.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_arrived.wait(), 5.0)
        instance = self.instances.get(request.match_info["instance_id"])
        if instance is None:
            return web.Response(status=404, text="")
        body = {
            "name": instance.name,
            "instanceId": instance.instance_id,
            "runtimeStatus": instance.runtime_status,
            "customStatus": instance.custom_status,
            "output": instance.output,
            "createdTime": instance.created,
            "lastUpdatedTime": instance.created,
        }
        return web.json_response(body, status=200 if instance.runtime_status != "Running" else 202)

    async def _purge(self, request: web.Request) -> web.Response:
        """Purge by filter: ended instances created in [createdTimeFrom, createdTimeTo)
        whose status is listed (the extension purges nothing that is still running)."""
        query = dict(request.query)
        self.purges.append(query)

        def moment(name: str) -> datetime | None:
            raw = query.get(name)
            return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None

        since, before = moment("createdTimeFrom"), moment("createdTimeTo")
        statuses = set(filter(None, query.get("runtimeStatus", "").split(",")))
        gone = [
            instance.instance_id
            for instance in self.instances.values()
            if instance.runtime_status in ({"Completed", "Failed", "Terminated"} & statuses)
            and (since is None or datetime.fromisoformat(instance.created) >= since)
            and (before is None or datetime.fromisoformat(instance.created) < before)
        ]
        for instance_id in gone:
            del self.instances[instance_id]
        return web.json_response({"instancesDeleted": len(gone)})

    def set_status(self, instance_id: str, status: str, **values: Any) -> None:
        instance = self.instances[instance_id]
        instance.runtime_status = status
        instance.custom_status = values.get("custom_status", instance.custom_status)
        instance.output = values.get("output", instance.output)

    def binding_json(self) -> str:
        """The client binding's JSON, as the host passes it to a durable-client function."""
        hooks = f"{self.base_url}/runtime/webhooks/durabletask"
        query = f"taskHub={TASK_HUB}&connection=Storage&code={SYSTEM_KEY}"
        return client_binding(
            hooks, f"{self.base_url}/durabletask/", query, f"code={SYSTEM_KEY}", TASK_HUB
        )

    def client(self) -> df.DurableOrchestrationClient:
        return df.DurableOrchestrationClient(self.binding_json())


@dataclass(frozen=True)
class _ModelBindingData:
    """The fields of the worker's ModelBindingData message the blob extension reads."""

    content: bytes
    version: str = "1.0"
    source: str = "AzureStorageBlobs"
    content_type: str = "application/json"


def blob_binding(connection: str, container: str, name: str) -> Any:
    """The BlobClient an Event Grid blob trigger hands over: built by the extension's
    converter from the host's model binding data (no blob content is read)."""
    content = json.dumps({"Connection": connection, "ContainerName": container, "BlobName": name})
    datum = Datum(value=_ModelBindingData(content.encode()), type="model_binding_data")
    return BlobClientConverter.decode(datum, trigger_metadata={}, pytype=BlobClient)


def timer_request(*, past_due: bool = False) -> func.TimerRequest:
    info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None, "IsPastDue": past_due}
    timer: func.TimerRequest = TimerRequestConverter.decode(
        meta.Datum(json.dumps(info), "json"), trigger_metadata={}
    )
    return timer


TENANT_CLAIM = "http://schemas.microsoft.com/identity/claims/tenantid"
TENANT = "6f0b7c44-5c0e-4d8e-9a1b-0c7e1f2d3a4b"
"""The tests' Entra tenant: AppEnv's CCEXPORT_TENANT_ID, and the tenant of ``principal``."""


def principal(
    roles: Iterable[str], object_id: str | None = None, *, tenant: str | None = TENANT
) -> dict[str, str]:
    """Easy Auth headers of a signed-in user with these app roles, of ``tenant`` (by
    default the tests' own; None for a principal that names no tenant)."""
    oid = object_id or str(uuid.uuid4())
    doc = {
        "auth_typ": "aad",
        "name_typ": "name",
        "role_typ": "roles",
        "claims": [
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
            *([] if tenant is None else [{"typ": TENANT_CLAIM, "val": tenant}]),
            {"typ": "name", "val": "Test User"},
            *({"typ": "roles", "val": role} for role in roles),
        ],
    }
    encoded = base64.b64encode(json.dumps(doc).encode()).decode()
    return {"x-ms-client-principal": encoded, "x-ms-client-principal-id": oid}


def http_request(
    method: str,
    path: str,
    *,
    route_params: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
) -> func.HttpRequest:
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
    return func.HttpRequest(
        method,
        f"https://ccexport-test.azurewebsites.net/api/{path}" + (f"?{query}" if query else ""),
        headers=dict(headers or {}),
        params=dict(params or {}),
        route_params=dict(route_params or {}),
        body=raw,
    )


def response_json(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body() or b"null")


@dataclass
class AppEnv:
    """One test's app settings and storage: its own containers, its own home folder."""

    connection_string: str
    home: Path
    inbox: str
    exports: str
    reports: str
    staging: str

    @property
    def service(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.connection_string)

    def settings(self, **extra: str) -> dict[str, str]:
        return {
            "CCEXPORT_STORAGE": self.connection_string,
            "CCEXPORT_STORAGE_CONNECTION_STRING": self.connection_string,
            "INBOX_CONTAINER": self.inbox,
            "EXPORTS_CONTAINER": self.exports,
            "REPORTS_CONTAINER": self.reports,
            "STAGING_CONTAINER": self.staging,
            "CCEXPORT_HOME": str(self.home),
            "RUN_QUIET_SECONDS": "120",
            "WEBSITE_AUTH_ENABLED": "True",  # as App Service sets it: principals are trusted
            "CCEXPORT_TENANT_ID": TENANT,  # as the deployment sets it: only this tenant's
            **extra,
        }

    def container(self, name: str) -> ContainerClient:
        return self.service.get_container_client(name)

    def write(self, name: str, data: bytes = b"a,b\n") -> None:
        self.container(self.inbox).upload_blob(name, data, overwrite=True)

    def write_later(self, name: str, data: bytes = b"{}") -> None:
        """Write once the clock has passed the next whole second: blob times have
        one-second resolution, and model.json must be seen as written after the parts."""
        time.sleep(1.0 - (time.time() % 1.0) + 0.01)
        self.write(name, data)


def new_app_env(connection_string: str, home: Path) -> AppEnv:
    tag = uuid.uuid4().hex[:10]
    env = AppEnv(
        connection_string,
        home,
        f"inbox-{tag}",
        f"exports-{tag}",
        f"reports-{tag}",
        f"staging-{tag}",
    )
    service = env.service
    for name in (env.inbox, env.exports, env.reports, env.staging):
        service.create_container(name)
    return env
