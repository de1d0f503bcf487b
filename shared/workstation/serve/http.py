"""The app's HTTP functions behind aiohttp, and sign-in as App Service authentication.

Each HTTP function is served at its own route (``/api/<route>``) for its own methods,
through one adapter: the aiohttp request becomes a ``func.HttpRequest``, the function's
own handler answers, and its ``func.HttpResponse`` goes back as it is. No route is
written twice.

Sign-in: App Service authentication (Easy Auth) removes any ``x-ms-client-principal*``
header a client sends and adds the signed-in user's. serve does the same with the
principal it was started for (``--user``/``--role``). A function key is not needed
on loopback; one that is sent is ignored, as the query's ``code`` parameter.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web
from aiohttp.typedefs import Middleware

from shared.workstation.serve.host import HostedApp, HostError, HttpFunction
from shared.workstation.serve.options import LOCAL_TENANT

log = logging.getLogger("ccexport.serve")

PRINCIPAL_PREFIX = "x-ms-client-principal"
_CONSTRAINT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")


@dataclass(frozen=True)
class Principal:
    """The signed-in user serve presents to the app, as Easy Auth encodes one (of the
    tenant serve plays, LOCAL_TENANT)."""

    user: str
    roles: tuple[str, ...]

    @property
    def object_id(self) -> str:
        """Stable for a user name, so connections' "accepted by" stays the same person."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ccexport-serve:user:{self.user}"))

    def headers(self) -> dict[str, str]:
        claims = [
            {
                "typ": "http://schemas.microsoft.com/identity/claims/objectidentifier",
                "val": self.object_id,
            },
            {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": LOCAL_TENANT},
            {"typ": "name", "val": self.user},
            *({"typ": "roles", "val": role} for role in self.roles),
        ]
        doc = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
        return {
            PRINCIPAL_PREFIX: base64.b64encode(json.dumps(doc).encode()).decode(),
            f"{PRINCIPAL_PREFIX}-id": self.object_id,
            f"{PRINCIPAL_PREFIX}-name": self.user,
            f"{PRINCIPAL_PREFIX}-idp": "aad",
        }


def aiohttp_path(prefix: str, route: str) -> str:
    """``exports/{name}`` under ``api`` → ``/api/exports/{name}`` (constraints dropped)."""
    if "?" in route or "*" in route:
        raise HostError(f"route {route!r}: optional and catch-all parameters are not served")
    path = _CONSTRAINT.sub(lambda m: "{" + m.group(1) + "}", route.strip("/"))
    return f"/{prefix}/{path}" if prefix else f"/{path}"


def _joined(pairs: Iterable[tuple[str, str]], *, fold: bool) -> dict[str, str]:
    """Repeated names joined with commas, as the Functions host passes them."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower() if fold else name
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def to_http_request(request: web.Request, body: bytes, principal: Principal) -> func.HttpRequest:
    headers = _joined(
        (
            (name, value)
            for name, value in request.headers.items()
            if not name.lower().startswith(PRINCIPAL_PREFIX)
        ),
        fold=True,
    )
    headers.update(principal.headers())
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=headers,
        params=_joined(request.query.items(), fold=False),
        route_params=dict(request.match_info),
        body=body,
    )


def to_web_response(response: func.HttpResponse) -> web.Response:
    headers = dict(response.headers.items())
    if not any(name.lower() == "content-type" for name in headers) and response.mimetype:
        charset = f"; charset={response.charset}" if response.charset else ""
        headers["Content-Type"] = f"{response.mimetype}{charset}"
    return web.Response(status=response.status_code, body=response.get_body(), headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Gate:
    """Who may reach serve at all: this machine's programs, never a web page.

    Every request is signed in as an admin (by default) with no key, so a page in the
    user's browser must not reach it: a request whose ``Host`` is not serve's own
    address (DNS rebinding) or that a browser marks as coming from another site
    (``Origin``, ``Sec-Fetch-Site``) is refused. While serve stops, only reads are
    answered, so runs in flight can be watched but no new one starts.
    """

    def __init__(self) -> None:
        self.hosts: frozenset[str] = frozenset()
        self.stopping = False

    def listen_on(self, port: int) -> None:
        self.hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.hosts)

    def middleware(self) -> Middleware:
        @web.middleware
        async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._admit(request, handler)

        return gate

    async def _admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host.lower() not in self.hosts:
            return _refusal(421, "serve answers only at its own address (127.0.0.1 or localhost)")
        origin = request.headers.get("Origin")
        if (origin is not None and origin.lower() not in self.origins) or request.headers.get(
            "Sec-Fetch-Site", ""
        ).lower() == "cross-site":
            return _refusal(403, "requests from other sites are refused")
        if self.stopping and request.method not in {"GET", "HEAD"}:
            return _refusal(503, "serve is stopping: it starts nothing new")
        return await handler(request)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request no function serves gets a JSON error like the app's own, not aiohttp's page."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = (
            f"no function serves {request.method} {request.path}"
            if exc.status in {404, 405}
            else exc.reason
        )
        return _refusal(exc.status, message)


class FunctionRoutes:
    """aiohttp routes for every HTTP function of the app."""

    def __init__(
        self, app: HostedApp, principal: Principal, client_binding: Callable[[], str]
    ) -> None:
        self.app = app
        self.principal = principal
        self.client_binding = client_binding

    def routes(self) -> Iterable[web.RouteDef]:
        for function in self.app.http:
            path = aiohttp_path(self.app.route_prefix, function.route)
            for method in function.methods:
                handler = self._handler(function)
                # The host's routing takes a path with or without a trailing slash.
                yield web.route(method, path, handler)
                yield web.route(method, f"{path}/", handler)

    def _handler(self, function: HttpFunction) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.method not in function.methods:  # aiohttp adds HEAD to GET routes
                raise web.HTTPMethodNotAllowed(request.method, function.methods)
            started = time.monotonic()
            body = await request.read()
            kwargs: dict[str, Any] = {
                function.request_param: to_http_request(request, body, self.principal)
            }
            if function.client_param:
                kwargs[function.client_param] = self.client_binding()
            try:
                answer = to_web_response(await function.handler(**kwargs))
            except Exception:
                log.exception(
                    "%s %s: the function %s raised", request.method, request.path, function.name
                )
                answer = web.json_response(
                    {"error": "internal error; serve's log has the details"}, status=500
                )
            log.info(
                "%s %s %d %.0f ms",
                request.method,
                request.path,
                answer.status,
                (time.monotonic() - started) * 1000,
            )
            return answer

        return handle
