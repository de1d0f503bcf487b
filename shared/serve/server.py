"""The running server: the engine, the HTTP routes, the inbox events, the timer."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from azure.durable_functions.models.utils import http_utils
from azure.functions.timer import TimerRequest

from shared.local_run import app_engine
from shared.serve.command import INBOX_INTERVAL, LOOPBACK, MAX_BODY, ServeOptions
from shared.serve.durable import DurableApi
from shared.serve.events import InboxBlob, InboxEvents
from shared.serve.host import HostedApp, TriggerFunction, hosted_app, resolve_setting
from shared.serve.http import FunctionRoutes, Principal, json_errors
from shared.serve.schedule import check_schedule, next_fire, run_schedule
from shared.settings import AppSettings

log = logging.getLogger("ccexport.serve")


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


async def _inbox_listing(env: Mapping[str, str]) -> dict[str, str]:
    from functions.services import services  # noqa: PLC0415 - the app's own clients

    async with services(env) as app:
        return {blob.name: blob.etag for blob in await app.inbox.list_files()}


async def serve(options: ServeOptions, env: Mapping[str, str]) -> int:
    """Serve until SIGINT or SIGTERM; 0 when stopped cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # before the first line: a stop is never lost
    app = hosted_app()
    schedules = (
        {f.name: check_schedule(resolve_setting(f.setting, env)) for f in app.timers}
        if options.timer
        else {}
    )
    engine = app_engine(
        activity_concurrency=int(app.durable.get("maxConcurrentActivityFunctions", 8)),
        orchestration_concurrency=int(app.durable.get("maxConcurrentOrchestratorFunctions", 8)),
    )
    engine.on_close(_close_activities)
    with engine:
        durable = DurableApi(engine)
        principal = Principal(options.user, options.roles)
        web_app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
        web_app.add_routes(list(durable.routes()))
        web_app.add_routes(list(FunctionRoutes(app, principal, durable.binding_json).routes()))
        runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, LOOPBACK, options.port)
            await site.start()
            port = runner.addresses[0][1]
            durable.base_url = f"http://{LOOPBACK}:{port}"
            triggers = Triggers(app, durable, env)
            events = InboxEvents(
                lambda: _inbox_listing(env),
                triggers.blob_created,
                interval=INBOX_INTERVAL,
                settle=options.inbox is not None,
            )
            present = await events.prime()
            _say(f"serving {durable.base_url}/{app.route_prefix}")
            where = (
                str(options.inbox)
                if options.inbox is not None
                else f"container {AppSettings.from_mapping(env).inbox_container}"
            )
            _say(f"inbox {where} ({present} files there now; new run folders start runs)")
            signed_in = ", ".join(options.roles) or "no roles"
            _say(f"signed in as {options.user} ({signed_in})")
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
            print("stopping: no new requests; waiting for runs in flight", file=sys.stderr)
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await runner.cleanup()
            await http_utils._close_session()  # the SDK's client session lives on this loop
        still = await asyncio.to_thread(durable.wait_for_running, options.grace)
        if still:
            log.warning(
                "%d run(s) still running were stopped: %s. Their accepted imports are kept; "
                "start them again to send the rest.",
                len(still),
                ", ".join(still),
            )
    return 0
