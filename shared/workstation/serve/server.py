"""The running server: the engine, the HTTP routes, the inbox events, the timer.

Start-up checks what a person can fix (the inbox can be listed, the storage answers)
and says it in one line; nothing is printed before the first line but that line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Mapping
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.durable_functions.models.utils import http_utils
from azure.functions.timer import TimerRequest

from functions.services import close_services, services
from shared.config import AppSettings
from shared.console.pages import CONSOLE_ROUTE
from shared.errors import ConfigError
from shared.workstation.local_run import app_engine
from shared.workstation.serve.durable import DurableApi
from shared.workstation.serve.events import InboxBlob, InboxEvents
from shared.workstation.serve.host import HostedApp, TriggerFunction, hosted_app, resolve_setting
from shared.workstation.serve.http import FunctionRoutes, Gate, Principal, json_errors
from shared.workstation.serve.options import INBOX_INTERVAL, LOOPBACK, MAX_BODY, ServeOptions
from shared.workstation.serve.schedule import check_schedule, next_fire, run_schedule

log = logging.getLogger("ccexport.serve")

T = TypeVar("T")
STARTUP_SECONDS = 30.0
"""How long the storage may take to answer at start-up."""
TRIGGERS_SECONDS = 10.0
"""How long a stop waits for a trigger already running (it may be starting a run)."""


async def _close_activities() -> None:
    """Close the activities' clients (built from the settings at the first activity)."""
    from functions import activities as bindings  # noqa: PLC0415 - the app's own module

    current = bindings.install(None)
    if current is not None:
        await current.aclose()


def _say(line: str) -> None:
    print(line, flush=True)


class Triggers:
    """Calls the app's blob and timer triggers with the bindings the host would pass."""

    def __init__(self, app: HostedApp, durable: DurableApi, env: Mapping[str, str]) -> None:
        self.app = app
        self.durable = durable
        self.env = env

    async def _call(self, function: TriggerFunction, trigger: Any) -> None:
        kwargs: dict[str, Any] = {function.trigger_param: trigger}
        if function.client_param:
            kwargs[function.client_param] = self.durable.binding_json()
        await function.handler(**kwargs)

    async def blob_created(self, name: str) -> None:
        for function in self.app.blobs:
            container = resolve_setting(function.setting, self.env).partition("/")[0]
            await self._call(function, InboxBlob(name, container))

    async def timer_fired(self, function: TriggerFunction, past_due: bool) -> None:
        await self._call(function, TimerRequest(past_due=past_due))


async def _create_containers(settings: AppSettings) -> None:
    """The app's containers in a storage account reached by connection string (Azurite),
    as infra/ creates them in Azure. Fails fast: one try, five seconds."""
    if not settings.connection_string:
        return
    from azure.storage.blob.aio import BlobServiceClient  # noqa: PLC0415

    names = (
        settings.inbox_container,
        settings.exports_container,
        settings.staging_container,
        settings.reports_container,
    )
    async with BlobServiceClient.from_connection_string(
        settings.connection_string, retry_total=0, connection_timeout=5
    ) as service:
        for name in names:
            with suppress(ResourceExistsError):
                await service.create_container(name)


async def _until(work: Awaitable[T], stop: asyncio.Event, what: str) -> T | None:
    """``work``, unless a stop comes first (None) or it takes too long (ConfigError)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait(
        {task, stopped}, timeout=STARTUP_SECONDS, return_when=asyncio.FIRST_COMPLETED
    )
    stopped.cancel()
    if task in done:
        return task.result()
    task.cancel()
    if stop.is_set():
        return None
    raise ConfigError(f"{what} did not answer within {STARTUP_SECONDS:.0f} s")


async def _ready_inbox(
    settings: AppSettings, events: InboxEvents, stop: asyncio.Event
) -> int | None:
    """Storage reachable, containers there, the inbox listed: how many files it holds."""
    where = (
        f"the inbox folder {settings.local_inbox}"
        if settings.is_local
        else f"the storage account (container {settings.inbox_container!r})"
    )
    try:
        await _until(_create_containers(settings), stop, where)
        return await _until(events.prime(), stop, where)
    except PermissionError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    except AzureError as exc:
        message = getattr(exc, "message", None) or type(exc).__name__
        first = str(message).splitlines()[0][:200]
        raise ConfigError(f"{where} cannot be reached: {first}") from None


class Stopping:
    """SIGINT or SIGTERM: the first stops serve; a second one stops it without waiting."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.hurry = threading.Event()

    def __call__(self) -> None:
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()


async def serve(options: ServeOptions, env: Mapping[str, str]) -> int:
    """Serve until SIGINT or SIGTERM; 0 when stopped cleanly."""
    stopping = Stopping()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping)  # before the first line: a stop is never lost
    stop = stopping.stop
    app = hosted_app()
    schedules = (
        {f.name: check_schedule(resolve_setting(f.setting, env)) for f in app.timers}
        if options.timer
        else {}
    )
    settings = AppSettings.from_mapping(env)
    engine = app_engine(
        activity_concurrency=int(app.durable.get("maxConcurrentActivityFunctions", 8)),
        orchestration_concurrency=int(app.durable.get("maxConcurrentOrchestratorFunctions", 8)),
    )
    engine.on_close(_close_activities)
    async with AsyncExitStack() as stack:
        stack.enter_context(engine)
        stack.push_async_callback(http_utils._close_session)  # the SDK's session, this loop's
        stack.push_async_callback(close_services)  # the app's clients, after the last request
        listing = await stack.enter_async_context(services(env))
        durable = DurableApi(engine)
        triggers = Triggers(app, durable, env)

        async def inbox_files() -> dict[str, str]:
            return {blob.name: blob.etag for blob in await listing.inbox.list_files()}

        events = InboxEvents(
            inbox_files,
            triggers.blob_created,
            interval=INBOX_INTERVAL,
            settle=settings.is_local,
        )
        present = await _ready_inbox(settings, events, stop)
        if present is None:
            return 0  # stopped while starting
        gate = Gate()
        runner = await _listen(app, durable, gate, options)
        stack.push_async_callback(runner.cleanup)

        _say(f"serving {durable.base_url}/{app.route_prefix}")
        _say(f"console {durable.base_url}/{app.route_prefix}/{CONSOLE_ROUTE}/")
        where = str(options.inbox) if options.inbox else f"container {settings.inbox_container}"
        _say(f"inbox {where} ({present} files there now; new run folders start runs)")
        _say(f"signed in as {options.user} ({', '.join(options.roles) or 'no roles'})")
        now = datetime.now(UTC)
        for name, schedule in schedules.items():
            when = next_fire(schedule, now)
            _say(f"timer {name} '{schedule}', next at {when:%Y-%m-%d %H:%M:%S}Z")

        tasks = [asyncio.create_task(events.run(stop))]
        for function in app.timers:
            if function.name in schedules:
                fire = functools.partial(triggers.timer_fired, function)
                tasks.append(
                    asyncio.create_task(run_schedule(schedules[function.name], fire, stop))
                )
        await stop.wait()
        gate.stopping = True
        await _wind_down(tasks, durable, options.grace, stopping)
    return 0


async def _listen(
    app: HostedApp, durable: DurableApi, gate: Gate, options: ServeOptions
) -> web.AppRunner:
    """The HTTP functions and the Durable API on 127.0.0.1, behind the gate."""
    web_app = web.Application(
        client_max_size=MAX_BODY, middlewares=[gate.middleware(), json_errors]
    )
    web_app.add_routes(list(durable.routes()))
    principal = Principal(options.user, options.roles)
    web_app.add_routes(list(FunctionRoutes(app, principal, durable.binding_json).routes()))
    runner = web.AppRunner(web_app, access_log=None, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOOPBACK, options.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    gate.listen_on(port)
    durable.base_url = f"http://{LOOPBACK}:{port}"
    return runner


async def _wind_down(
    tasks: list[asyncio.Task[None]], durable: DurableApi, grace: float, stopping: Stopping
) -> None:
    """Stop the triggers, then give runs in flight ``grace`` seconds (reads still answered)."""
    print(
        "stopping: nothing new starts; runs in flight may finish "
        f"(up to {grace:g} s; Ctrl-C again to stop now)",
        file=sys.stderr,
    )
    _, late = await asyncio.wait(tasks, timeout=TRIGGERS_SECONDS)
    for task in late:
        task.cancel()
    still = await asyncio.to_thread(durable.wait_for_running, grace, stopping.hurry)
    if still:
        log.warning(
            "%d run(s) still running were stopped: %s. Their accepted imports are kept; "
            "start them again to send the rest.",
            len(still),
            ", ".join(still),
        )
