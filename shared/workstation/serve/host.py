"""The function app's functions and their bindings, read from function_app.py.

The Functions host learns an app's functions from the decorators' binding metadata;
so does ``serve``, so a function added to the app is served without a change here.
Only the binding kinds this app uses are understood; any other one stops start-up
with a message, rather than leaving a function silently unserved.
"""

from __future__ import annotations

import copy
import importlib
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

PROJECT_ROOT = Path(__file__).resolve().parents[3]
"""The function app's root: function_app.py and host.json."""

DURABLE_KINDS = frozenset({"orchestrationTrigger", "activityTrigger"})
"""Run by the local Durable engine (shared.workstation.local_run registers them)."""

Handler = Callable[..., Awaitable[Any]]


class HostError(Exception):
    """The app declares something serve cannot host."""


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: str
    """The Functions route template, below the route prefix (``exports/{name}``)."""
    methods: tuple[str, ...]
    anonymous: bool
    handler: Handler
    request_param: str
    client_param: str | None
    """The durable client binding's parameter, if the function has one."""


@dataclass(frozen=True)
class TriggerFunction:
    name: str
    handler: Handler
    trigger_param: str
    client_param: str | None
    setting: str
    """The trigger's schedule (timer) or path (blob), as declared (``%NAME%`` unresolved)."""


@dataclass(frozen=True)
class HostedApp:
    http: tuple[HttpFunction, ...]
    timers: tuple[TriggerFunction, ...]
    blobs: tuple[TriggerFunction, ...]
    route_prefix: str
    durable: dict[str, Any]
    """host.json's ``extensions.durableTask``."""


def load_function_app() -> func.FunctionApp:
    """``function_app.app``, imported from the project root."""
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    module = importlib.import_module("function_app")
    app: func.FunctionApp = module.app
    return app


def _host_json() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PROJECT_ROOT / "host.json").read_text("utf-8"))
    return loaded


def _value(raw: Any) -> str:
    return str(getattr(raw, "value", raw))


def hosted_app(
    app: func.FunctionApp | None = None, host: dict[str, Any] | None = None
) -> HostedApp:
    """Every function of the app, sorted by how serve runs it (``host``: host.json)."""
    app = app or load_function_app()
    host = _host_json() if host is None else host
    http: list[HttpFunction] = []
    timers: list[TriggerFunction] = []
    blobs: list[TriggerFunction] = []
    # The library indexes an app once (a second get_functions() finds every name taken,
    # as the worker never asks twice); index a shallow copy with a fresh name table.
    indexed = copy.copy(app)
    indexed.functions_bindings = {}
    for function in indexed.get_functions():
        name = str(function.get_function_name())
        declared = function.get_trigger()
        if declared is None:
            raise HostError(f"function {name!r} has no trigger")
        trigger = declared.get_dict_repr()
        kind = _value(trigger["type"])
        clients = [
            b.get_dict_repr()["name"]
            for b in function.get_bindings()
            if b.get_binding_name() == "durableClient"
        ]
        client = clients[0] if clients else None
        handler = function.get_user_function()
        if kind == "httpTrigger":
            http.append(
                HttpFunction(
                    name=name,
                    route=str(trigger.get("route") or name),
                    methods=tuple(_value(m).upper() for m in trigger.get("methods") or ("GET",)),
                    anonymous=_value(trigger.get("authLevel", "function")) == "anonymous",
                    handler=handler,
                    request_param=trigger["name"],
                    client_param=client,
                )
            )
        elif kind in {"timerTrigger", "blobTrigger"}:
            found = TriggerFunction(
                name=name,
                handler=handler,
                trigger_param=trigger["name"],
                client_param=client,
                setting=str(trigger.get("schedule") or trigger.get("path") or ""),
            )
            (timers if kind == "timerTrigger" else blobs).append(found)
        elif kind not in DURABLE_KINDS:
            raise HostError(f"function {name!r}: serve cannot host a {kind} trigger")
    prefix = str(host.get("extensions", {}).get("http", {}).get("routePrefix", "api"))
    durable = dict(host.get("extensions", {}).get("durableTask", {}))
    if durable.get("overridableExistingInstanceStates") != "NonRunningStates":
        # serve's Durable API refuses a start over a running instance, as the host does
        # with this setting; replacing running instances (AnyState) is not served.
        raise HostError(
            "host.json: serve needs durableTask.overridableExistingInstanceStates "
            "= NonRunningStates"
        )
    return HostedApp(tuple(http), tuple(timers), tuple(blobs), prefix.strip("/"), durable)


def resolve_setting(value: str, env: dict[str, str] | Any) -> str:
    """A binding expression's ``%NAME%`` parts replaced by app settings, as the host does."""
    parts = value.split("%")
    if len(parts) % 2 == 0:
        raise HostError(f"unbalanced % in binding expression {value!r}")
    for i in range(1, len(parts), 2):
        name = parts[i]
        if name not in env:
            raise HostError(f"the binding expression {value!r} needs the setting {name}")
        parts[i] = env[name]
    return "".join(parts)
