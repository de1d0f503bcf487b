"""The one shape of a console page: who may open it, the form check, and how what it
raises is shown.

A browser cannot send a function key, so the console's functions are anonymous at
the function level. That is safe only because App Service authentication stands in
front of them (or ``ccexport serve``, which plays its part): every page refuses to
answer (403, with a page that says why) unless the platform's authentication is on,
and then only to a signed-in caller (functions/principal.py). The function key
alone is never a caller here, whatever ``CCEXPORT_FUNCTION_KEY_IS_ADMIN`` says.

A page declares, method by method, who may call it (as the HTTP API's routes do)::

    @page(bp, "connections/{name}", GET=CONNECTION_ROLES, POST=admins("change connections"))

Every POST must carry the form token of the page it came from (shared.console.safety).
A handler returns a ``Page`` (rendered with the console's common context), a
``Redirect`` (after a change: post, redirect, get) or a ready ``HttpResponse``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions.http_api.routes import (
    ROUTE_PREFIX,
    Who,
    http_function,
    log_failure,
    public_origin,
    status_of,
    what_failed,
)
from functions.principal import Caller, SignIn
from functions.services import Services, services
from shared.console.forms import Form
from shared.console.pages import CONSOLE_ROUTE, render
from shared.console.safety import (
    FORM_FIELD,
    PAGE_HEADERS,
    ForgedForm,
    check_form,
    form_cookie,
    new_form_token,
    set_form_cookie,
)
from shared.console.wording import Problem, problem
from shared.errors import CcexportError

CONSOLE = f"/{ROUTE_PREFIX}/{CONSOLE_ROUTE}"
"""The console's root path: ``/api/console``."""


def console_path(route: str = "") -> str:
    """The path of a console page (``exports/x`` → ``/api/console/exports/x``)."""
    return f"{CONSOLE}/{route}" if route else f"{CONSOLE}/"


@dataclass(frozen=True)
class Page:
    """A page to render: its template, what it shows, and its status."""

    template: str
    context: Mapping[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True)
class Redirect:
    """Where the browser goes next (303: see other), after a change."""

    route: str
    """A console route (``connections/acme``), or an absolute path starting with ``/``."""


Answer = Page | Redirect | func.HttpResponse


@dataclass(frozen=True)
class Visit:
    """One request to a console page."""

    req: func.HttpRequest
    caller: Caller
    app: Services
    form_token: str
    client: df.DurableOrchestrationClient | None = None
    _form: list[Form] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.req.method).upper()

    def param(self, name: str) -> str:
        return str(self.req.route_params.get(name, ""))

    def query(self, name: str) -> str:
        return str(self.req.params.get(name, "")).strip()

    @property
    def form(self) -> Form:
        """The submitted form (checked against forgery before the handler ran)."""
        if not self._form:
            self._form.append(Form.parse(self.req.get_body()))
        return self._form[0]

    @property
    def durable(self) -> df.DurableOrchestrationClient:
        if self.client is None:
            raise RuntimeError("this page declares no Durable client (page(durable=True))")
        return self.client


PageHandler = Callable[[Visit], Awaitable[Answer]]


def _secure(req: func.HttpRequest) -> bool:
    return public_origin(req).startswith("https:")


def _html(
    status: int, body: str, token: str | None, req: func.HttpRequest, **headers: str
) -> func.HttpResponse:
    all_headers = {**PAGE_HEADERS, **headers}
    if token is not None:
        all_headers["Set-Cookie"] = set_form_cookie(token, CONSOLE, secure=_secure(req))
    return func.HttpResponse(
        body, status_code=status, mimetype="text/html", charset="utf-8", headers=all_headers
    )


def _problem_page(shown: Problem, caller: Caller | None) -> str:
    return render(
        "problem.html",
        problem=shown,
        console=console_path(),
        caller=caller,
        form_token="",
        title=shown.title,
    )


def _answer(visit: Visit, answer: Answer, new_token: str | None) -> func.HttpResponse:
    if isinstance(answer, func.HttpResponse):
        return answer
    if isinstance(answer, Redirect):
        target = answer.route if answer.route.startswith("/") else console_path(answer.route)
        return _html(303, "", new_token, visit.req, Location=target)
    context = {
        "console": console_path(),
        "caller": visit.caller,
        "form_token": visit.form_token,
        "form_field": FORM_FIELD,
        **answer.context,
    }
    return _html(answer.status, render(answer.template, **context), new_token, visit.req)


async def _serve(
    handler: PageHandler,
    allowed: Mapping[str, Who],
    req: func.HttpRequest,
    client: df.DurableOrchestrationClient | None,
) -> func.HttpResponse:
    method = str(req.method).upper()
    held = form_cookie(req.headers)
    new_token = None if held else new_form_token()
    token = held or str(new_token)
    caller: Caller | None = None
    try:
        sign_in = SignIn.from_mapping(os.environ)
        if not sign_in.auth_enabled:
            shown = problem(
                403,
                "The console answers only behind App Service authentication (or "
                "`ccexport serve`), which tells it who you are; it is off for this app. "
                "Turn on authentication (infra/ does) and open the console again.",
                console=console_path(),
            )
            return _html(403, _problem_page(shown, None), None, req)
        who = allowed.get(method)
        if who is None:
            raise _NotHere(f"this page does not answer {method}")
        caller = sign_in.caller(req.headers)
        if who.admin_to is not None:
            caller.require_admin(who.admin_to)
        visit_form: list[Form] = []
        if method == "POST":
            form = Form.parse(req.get_body())
            check_form(form.get(FORM_FIELD), req.headers, public_origin(req))
            visit_form.append(form)
        async with services() as app:
            visit = Visit(req, caller, app, token, client, visit_form)
            return _answer(visit, await handler(visit), new_token)
    except CcexportError as exc:
        status = 405 if isinstance(exc, _NotHere) else 403 if isinstance(exc, ForgedForm) else 0
        status = status or status_of(exc)
        if status >= 500:
            ref = log_failure("console", exc, status)
            detail = f"{what_failed(exc)}. The function app's log has the details under {ref}."
        else:
            detail = str(exc)
        shown = problem(status, detail, console=console_path())
        return _html(status, _problem_page(shown, caller), new_token, req)
    except Exception as exc:
        ref = log_failure("console", exc, 500)
        detail = f"internal error. The function app's log has the details under {ref}."
        shown = problem(500, detail, console=console_path())
        return _html(500, _problem_page(shown, caller), new_token, req)


class _NotHere(CcexportError):
    """A method the page does not answer."""


def page(
    bp: df.Blueprint, path: str, *, durable: bool = False, **methods: Who
) -> Callable[[PageHandler], Any]:
    """Register ``handler`` as the console's HTTP function ``handler.__name__`` at
    ``console/<path>``, for the methods named (``GET=``, ``POST=``), each with who may
    call it. Anonymous at the function level: see the module docstring."""
    if not methods:
        raise ValueError(f"page {path!r}: name its methods and who may call them")
    allowed = {method.upper(): who for method, who in methods.items()}
    route = f"{CONSOLE_ROUTE}/{path}" if path else CONSOLE_ROUTE

    def register(handler: PageHandler) -> Any:
        return http_function(
            bp,
            route,
            list(allowed),
            func.AuthLevel.ANONYMOUS,
            durable=durable,
            named_after=handler,
            serve=lambda req, client: _serve(handler, allowed, req, client),
        )

    return register
