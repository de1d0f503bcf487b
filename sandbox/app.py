"""The sandbox's aiohttp application: routes, and the request pipeline every call goes through.

Pipeline for ``/v3/...`` (outermost first): request stats -> injected faults ->
error bodies -> bearer token (401/403) -> rate limit and daily quota (429) -> route.
The OAuth endpoints sit under ``/oauth2/default/v1/`` as on the real service, and the
test controls under ``/__sandbox/``.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from aiohttp import web
from aiohttp.typedefs import Handler

from sandbox import (
    api_account,
    api_activities,
    api_contacts,
    api_custom_fields,
    api_lists,
    control,
    wire,
)
from sandbox.config import SandboxConfig
from sandbox.state import SANDBOX, Sandbox, sandbox_of
from sandbox.wire import ApiError

API_PREFIX = "/v3/"
AUTHORIZE_PATH = "/oauth2/default/v1/authorize"
TOKEN_PATH = "/oauth2/default/v1/token"  # noqa: S105 - a path, not a secret


def _reset_connection(request: web.Request) -> None:
    """Drop the connection with a TCP RST, as a failing load balancer would."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    raise asyncio.CancelledError


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    faults = sandbox_of(request).faults
    if faults.fire("latency"):
        await asyncio.sleep(faults.settings["latency"].seconds)
    reset_after = False
    if faults.fire("reset"):
        if not faults.settings["reset"].after:
            _reset_connection(request)
        reset_after = True
    if faults.fire("http_503"):
        return wire.server_error(503)
    if faults.fire("http_500"):
        return wire.server_error(500)
    response = await handler(request)
    if reset_after:
        _reset_connection(request)
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer token, scope, then the per-key limits; only for the API proper. The
    account's routes take ``account_read``, the rest ``contact_data``."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    sandbox = sandbox_of(request)
    token = sandbox.oauth.authenticate(request.headers.get("Authorization"))
    if token is None:
        return wire.unauthorized()  # missing, unknown or expired token
    account = request.path.startswith(api_account.ACCOUNT_PATH)
    if ("account_read" if account else "contact_data") not in token.scopes:
        return wire.forbidden()
    refused = sandbox.limits.check_api(sandbox.oauth.client_id)
    if refused is not None:
        return refused
    sandbox.limits.enter(sandbox.oauth.client_id)
    try:
        return await handler(request)
    finally:
        sandbox.limits.leave(sandbox.oauth.client_id)


async def authorize(request: web.Request) -> web.Response:
    return await sandbox_of(request).oauth.authorize(request)


async def token(request: web.Request) -> web.Response:
    """The token endpoint: faults, its 1 request/s limit, then the grant itself."""
    sandbox = sandbox_of(request)
    if sandbox.faults.fire("token_error"):
        status = sandbox.faults.settings["token_error"].status
        error = "temporarily_unavailable" if status == 503 else "server_error"
        return wire.oauth_error(status, error, "The authorization server is unavailable.")
    params = dict(request.query)
    if request.content_type == "application/x-www-form-urlencoded":
        params.update((key, str(value)) for key, value in (await request.post()).items())
    client_id, _ = sandbox.oauth.client_of(request, params)
    refused = sandbox.limits.check_token(client_id or "anonymous")
    if refused is not None:
        return refused
    return sandbox.oauth.exchange(request, params)


def create_app(config: SandboxConfig | None = None) -> web.Application:
    """A sandbox application; its state lives in memory and dies with it."""
    sandbox = Sandbox.create(config or SandboxConfig())
    app = web.Application(
        client_max_size=sandbox.config.max_body_bytes,
        middlewares=[
            sandbox.stats.middleware,
            faults_middleware,
            errors_middleware,
            auth_middleware,
        ],
    )
    app[SANDBOX] = sandbox
    app.router.add_get(AUTHORIZE_PATH, authorize)
    app.router.add_post(TOKEN_PATH, token)
    for table in (
        api_account.routes,
        api_lists.routes,
        api_custom_fields.routes,
        api_contacts.routes,
        api_activities.routes,
        control.routes,
    ):
        app.router.add_routes(table)

    async def start_worker(_app: web.Application) -> None:
        sandbox.activities.start()
        sandbox.loop_lag.start()

    async def stop_worker(_app: web.Application) -> None:
        await sandbox.loop_lag.stop()
        await sandbox.activities.stop()

    app.on_startup.append(start_worker)
    app.on_cleanup.append(stop_worker)
    return app
