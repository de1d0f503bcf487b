"""The one shape of an HTTP route: who may call it, the services it works with, and how
what it raises is answered.

A route declares, method by method, who may call it::

    @route(bp, "connections/{name}", GET=CONNECTION_ROLES, DELETE=admins("delete them"))

and its handler gets a ``Call`` (the request, the caller, the opened services and,
for ``durable=True``, the Durable client) and returns its answer. Whatever it
raises from shared.errors becomes a one-line JSON error with the status that says
its kind. A 5xx says only its kind and a correlation id: its detail may quote
another service (Key Vault's 403 names the tenant and the identity), so the detail
goes to the log, under that id, and never to the caller.

The function the host indexes is made here with the parameters its bindings name
(``req``, ``client``), because the Functions host matches bindings to parameters by
name and ``serve`` reads the same binding metadata.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func
import orjson

from functions.principal import Caller, Forbidden, Unauthenticated, signed_in_caller
from functions.services import Services, services
from shared.constant_contact.transport import scrub
from shared.errors import (
    CcexportError,
    InputError,
    QuotaExhausted,
    ReauthorizationRequired,
    RemoteError,
)
from shared.exports.catalog import NotFound
from shared.runs.launcher import NotReady
from shared.secrets.store import SecretStoreError
from shared.storage.documents import DocumentChanged, DocumentExists
from shared.storage.locks import LockError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Who:
    """Who may call a route with one method."""

    admin_to: str | None = None
    """Set for admins only: what only an admin may do (``"connect accounts"``)."""
    anonymous: bool = False
    """No function key: what the request carries must admit it."""


CONNECTION_ROLES = Who()
"""Anyone with the function key; their roles decide, connection by connection, what
they reach (shared.exports.access)."""
ANONYMOUS = Who(anonymous=True)
"""No key and no caller (the OAuth callback: its single-use state admits it)."""


def admins(what: str) -> Who:
    """Admins and operators only; anyone else is told ``only an admin may <what>``."""
    return Who(admin_to=what)


ROUTE_PREFIX = "api"
"""Where the host serves the HTTP functions: host.json's ``extensions.http.routePrefix``
(unset, so the host's default)."""


def public_origin(req: func.HttpRequest) -> str:
    """The origin the browser reached the app at (``https://host``). Behind App
    Service's front end the worker may see the request as plain HTTP on an inner
    address; the front end says what the browser used in ``X-Forwarded-Proto`` and
    ``X-Forwarded-Host``."""
    parts = urlsplit(str(req.url))
    scheme = req.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    host = req.headers.get("x-forwarded-host", "").split(",")[0].strip()
    return f"{scheme or parts.scheme}://{host or parts.netloc}"


def app_path(route: str) -> str:
    """The path of one of the app's own routes (``runs/x`` → ``/api/runs/x``)."""
    return f"/{ROUTE_PREFIX}/{route}"


NOBODY = Caller("anonymous", frozenset())
"""The caller of an anonymous route: no roles, never an admin, whatever it sends."""


# --- answers ----------------------------------------------------------------------------


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        orjson.dumps(body), status_code=status, mimetype="application/json", headers=headers
    )


def error_answer(status: int, message: str) -> func.HttpResponse:
    return json_answer(status, {"error": message})


STATUS: tuple[tuple[type[Exception], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (NotReady, 409),
    (ReauthorizationRequired, 409),
    (DocumentExists, 409),
    (DocumentChanged, 412),
    (InputError, 400),  # ConfigError, AuthorizationError
    (LockError, 503),
    (SecretStoreError, 502),
    (RemoteError, 502),
)
"""The first kind an error is decides its status; any other CcexportError is a 500."""


FAILED: tuple[tuple[type[Exception], str], ...] = (
    (LockError, "another change holds the lock; try again shortly"),
    (SecretStoreError, "the secret store did not answer as expected"),
    (QuotaExhausted, "the daily Constant Contact request quota is used up until 00:00 UTC"),
    (RemoteError, "Constant Contact did not answer as expected"),
)
"""What a 5xx says, by the first kind the error is; any other says ``internal error``."""


def status_of(exc: BaseException) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def correlation_id() -> str:
    """A short random id that ties an answer to the log line holding its detail."""
    return secrets.token_hex(6)


def what_failed(exc: BaseException) -> str:
    """A 5xx's fixed message for its kind of error."""
    return next((text for kind, text in FAILED if isinstance(exc, kind)), "internal error")


def log_failure(where: str, exc: BaseException, status: int) -> str:
    """Log what went wrong (email addresses scrubbed) under a new correlation id; returns it.

    An error ccexport raised on purpose is one line; anything else keeps its traceback.
    A 4xx is a warning: the caller can act on it, the operator need not.
    """
    ref = correlation_id()
    detail = scrub(f"{type(exc).__name__}: {exc}")
    level = logging.ERROR if status >= 500 else logging.WARNING
    trace = None if isinstance(exc, CcexportError) else exc
    log.log(level, "%s [%s] %d %s", where, ref, status, detail, exc_info=trace)
    return ref


def failure_answer(status: int, exc: BaseException) -> func.HttpResponse:
    """A 5xx: the kind's fixed message and the correlation id of the log line."""
    ref = log_failure("HTTP API", exc, status)
    message = f"{what_failed(exc)}; the function app's log has the details under {ref}"
    return json_answer(status, {"error": message, "correlation_id": ref})


def answer_error(exc: CcexportError) -> func.HttpResponse:
    status = status_of(exc)
    if status >= 500:
        return failure_answer(status, exc)
    return error_answer(status, str(exc))


# --- one call ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request to a route, with what the route needs to answer it."""

    req: func.HttpRequest
    caller: Caller
    app: Services
    client: df.DurableOrchestrationClient | None = None

    @property
    def method(self) -> str:
        return str(self.req.method).upper()

    def param(self, name: str) -> str:
        """A route parameter (``{name}`` in the route)."""
        return str(self.req.route_params.get(name, ""))

    @property
    def durable(self) -> df.DurableOrchestrationClient:
        """The Durable client of a ``durable=True`` route."""
        if self.client is None:
            raise RuntimeError("this route declares no Durable client (route(durable=True))")
        return self.client

    def body(self, *, optional: bool = False) -> Any:
        """The JSON body; ``{}`` for an empty one when ``optional``."""
        raw = self.req.get_body()
        if not raw.strip():
            if optional:
                return {}
            raise InputError("the request needs a JSON body")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InputError("the body is not valid JSON") from None

    def if_match(self) -> str | None:
        """The ETag the caller read, for a change that must not overwrite another."""
        value = self.req.headers.get("If-Match")
        return value.strip() if value and value.strip() else None


Handler = Callable[[Call], Awaitable[func.HttpResponse]]


async def _serve(
    handler: Handler,
    allowed: Mapping[str, Who],
    req: func.HttpRequest,
    client: df.DurableOrchestrationClient | None,
) -> func.HttpResponse:
    method = str(req.method).upper()
    try:
        who = allowed.get(method)
        if who is None:
            return error_answer(405, f"this route does not answer {method}")
        caller = NOBODY if who.anonymous else signed_in_caller(req.headers, os.environ)
        if who.admin_to is not None:
            caller.require_admin(who.admin_to)
        async with services() as app:
            return await handler(Call(req, caller, app, client))
    except CcexportError as exc:
        return answer_error(exc)
    except Exception as exc:
        return failure_answer(500, exc)


def named(function: Callable[..., Any], handler: Callable[..., Any]) -> Callable[..., Any]:
    """The host names a function after the Python function, and binds the request and
    the client to its parameters; so the function keeps its own parameters (no
    ``__wrapped__``) and takes the handler's name and docstring."""
    function.__name__ = handler.__name__
    function.__qualname__ = handler.__qualname__
    function.__module__ = handler.__module__
    function.__doc__ = handler.__doc__
    return function


Serve = Callable[
    [func.HttpRequest, df.DurableOrchestrationClient | None], Awaitable[func.HttpResponse]
]
"""What answers one request of an HTTP function (with the Durable client, if it has one)."""


def http_function(
    bp: df.Blueprint,
    path: str,
    methods: list[str],
    auth_level: func.AuthLevel | None,
    *,
    durable: bool,
    named_after: Callable[..., Any],
    serve: Serve,
) -> Any:
    """Register the HTTP function ``named_after.__name__`` at ``path``, with a Durable
    client input when ``durable``, whose requests ``serve`` answers; returns the
    blueprint's function builder. The host binds ``req`` and ``client`` by name."""
    bound: Any
    if durable:

        async def with_client(
            req: func.HttpRequest, client: df.DurableOrchestrationClient
        ) -> func.HttpResponse:
            return await serve(req, client)

        bound = bp.durable_client_input(client_name="client")(named(with_client, named_after))
    else:

        async def plain(req: func.HttpRequest) -> func.HttpResponse:
            return await serve(req, None)

        bound = named(plain, named_after)
    return bp.route(route=path, methods=methods, auth_level=auth_level)(bound)


def route(
    bp: df.Blueprint, path: str, *, durable: bool = False, **methods: Who
) -> Callable[[Handler], Any]:
    """Register ``handler`` as the HTTP function ``handler.__name__`` at ``path``, for
    the methods named (``GET=``, ``PUT=``...), each with who may call it.

    Returns the blueprint's function builder, as the blueprint's own decorators do.
    """
    if not methods:
        raise ValueError(f"route {path!r}: name its methods and who may call them")
    anonymous = {who.anonymous for who in methods.values()}
    if len(anonymous) > 1:
        raise ValueError(f"route {path!r}: the function key is needed for every method or none")
    allowed = {method.upper(): who for method, who in methods.items()}
    auth_level = func.AuthLevel.ANONYMOUS if anonymous == {True} else None

    def register(handler: Handler) -> Any:
        return http_function(
            bp,
            path,
            list(allowed),
            auth_level,
            durable=durable,
            named_after=handler,
            serve=lambda req, client: _serve(handler, allowed, req, client),
        )

    return register
