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

from shared.serve.host import HostedApp, HostError, HttpFunction

log = logging.getLogger("ccexport.serve")

PRINCIPAL_PREFIX = "x-ms-client-principal"
_CONSTRAINT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")


@dataclass(frozen=True)
class Principal:
    """The signed-in user serve presents to the app, as Easy Auth encodes one."""

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


def to_http_request(request: web.Request, body: bytes, principal: Principal) -> func.HttpRequest:
    headers = {
        name: value
        for name, value in request.headers.items()
        if not name.lower().startswith(PRINCIPAL_PREFIX)
    }
    headers.update(principal.headers())
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=headers,
        params={name: value for name, value in request.query.items()},
        route_params=dict(request.match_info),
        body=body,
    )


def to_web_response(response: func.HttpResponse) -> web.Response:
    headers = dict(response.headers.items())
    if not any(name.lower() == "content-type" for name in headers) and response.mimetype:
        charset = f"; charset={response.charset}" if response.charset else ""
        headers["Content-Type"] = f"{response.mimetype}{charset}"
    return web.Response(status=response.status_code, body=response.get_body(), headers=headers)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
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
        return web.json_response({"error": message}, status=exc.status)


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
                yield web.route(method, path, self._handler(function))

    def _handler(self, function: HttpFunction) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
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
