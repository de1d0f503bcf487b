"""The console's connections pages (Admin > Connections in Customer Insights): the
list, add, view and edit, Connect and Reconnect, Remove. See functions/console/pages.py
for the page helper, shared/console/connection_pages.py for what the pages show.

Connect is a form (a POST, checked against forgery) that starts the authorization as
the HTTP API's connect does, then shows a link to Constant Contact rather than
redirecting there: a browser applies the page's ``form-action 'self'`` to where a
form's answer redirects, so a redirect to Constant Contact would be blocked. The
OAuth callback then leads back to the connection's page (functions/http_api/
connections.py, by the mark on the browser-binding cookie).
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions.console.pages import Page, Redirect, Visit, console_path, page
from functions.http_api.connections import browser_cookie, redirect_uri
from functions.http_api.routes import CONNECTION_ROLES, admins
from shared.console.connection_pages import (
    PRIVACY_TERMS,
    ConnectionForm,
    ConnectionView,
    connection_view,
    connection_views,
    done_notice,
    offered_roles,
    removal,
    save_form,
)
from shared.console.pages import render
from shared.console.safety import FORM_FIELD, PAGE_HEADERS
from shared.errors import InputError
from shared.exports.authorizing import start_authorization
from shared.exports.catalog import NotFound

bp = df.Blueprint()

ADD = admins("add connections")
CHANGE = admins("change connections")
CONNECT = admins("connect accounts")
REMOVE = admins("remove connections")


@page(bp, "connections", GET=CONNECTION_ROLES)
async def console_connections(visit: Visit) -> Page:
    """Every connection the caller may use, with its status and account."""
    views = await connection_views(visit.app.catalog, visit.caller)
    notice = done_notice(visit.query("done"))
    return Page("connections.html", {"title": "Connections", "views": views, "notice": notice})


async def _form_context(visit: Visit, form: ConnectionForm, error: str | None) -> dict[str, Any]:
    return {
        "form": form,
        "choices": form.choices(await offered_roles(visit.app.catalog)),
        "terms": PRIVACY_TERMS,
        "error": error,
    }


# Registered before connections/{name}: serve matches routes in order (the host puts a
# literal segment first on its own).
@page(bp, "connections/new", GET=ADD, POST=ADD)
async def console_connection_new(visit: Visit) -> Page | Redirect:
    """The add form; saving creates the connection (never replaces one)."""
    form = ConnectionForm() if visit.method == "GET" else ConnectionForm.read(visit.form)
    error = None
    if visit.method == "POST":
        try:
            saved = await save_form(visit.app.catalog, visit.caller, form, new=True)
        except InputError as exc:
            error = str(exc)
        else:
            return Redirect(f"connections/{saved.value.name}?done=created")
    context = await _form_context(visit, form, error)
    return Page(
        "connection_new.html",
        {"title": "Add connection", **context},
        status=400 if error else 200,
    )


def _connection_page(
    view: ConnectionView, context: dict[str, Any], notice: str | None, status: int = 200
) -> Page:
    shown = {"title": view.connection.display_name, "view": view, "notice": notice, **context}
    return Page("connection.html", shown, status)


@page(bp, "connections/{name}", GET=CONNECTION_ROLES, POST=CHANGE)
async def console_connection(visit: Visit) -> Page | Redirect:
    """A connection: what it is and reaches; for admins, Connect, Remove and the edit
    form, whose Save changes it at the version the page showed."""
    catalog, name = visit.app.catalog, visit.param("name")
    view = await connection_view(catalog, visit.caller, name)
    if visit.method == "GET":
        context: dict[str, Any] = {}
        if visit.caller.is_admin:
            context = await _form_context(visit, ConnectionForm.of(view), None)
        return _connection_page(view, context, done_notice(visit.query("done")))
    form = ConnectionForm.read(visit.form, name)
    try:
        await save_form(catalog, visit.caller, form, new=False)
    except InputError as exc:
        context = await _form_context(visit, form, str(exc))
        return _connection_page(view, context, None, status=400)
    return Redirect(f"connections/{name}?done=saved")


@page(bp, "connections/{name}/connect", POST=CONNECT)
async def console_connection_connect(visit: Visit) -> func.HttpResponse:
    """Start connecting (or reconnecting) the account, as the HTTP API's connect does:
    state and PKCE verifier kept server side, the browser bound by its cookie, marked
    so that the callback leads back to the connection's page."""
    name = visit.param("name")
    view = await connection_view(visit.app.catalog, visit.caller, name)
    url, key = await start_authorization(
        visit.app.catalog,
        visit.app.connections,
        name,
        redirect_uri(visit.app.config, visit.req),
    )
    body = render(
        "connection_connect.html",
        console=console_path(),
        caller=visit.caller,
        form_token=visit.form_token,
        form_field=FORM_FIELD,
        title=f"Connect {view.connection.display_name}",
        view=view,
        authorize=url,
    )
    headers = {**PAGE_HEADERS, "Set-Cookie": browser_cookie(visit.req, key, console=True)}
    return func.HttpResponse(
        body, status_code=200, mimetype="text/html", charset="utf-8", headers=headers
    )


@page(bp, "connections/{name}/remove", GET=REMOVE, POST=REMOVE)
async def console_connection_remove(visit: Visit) -> Page | Redirect:
    """The confirmation (what stops, what is deleted), then the removal itself: the
    connection and its tokens, as ``DELETE /api/connections/{name}`` removes them."""
    catalog, name = visit.app.catalog, visit.param("name")
    if visit.method == "GET":
        found = await removal(catalog, visit.caller, name)
        title = f"Remove {found.view.connection.display_name}?"
        return Page("connection_remove.html", {"title": title, "removal": found})
    if not await catalog.delete_connection(name, visit.form.get("etag") or None):
        raise NotFound(f"no connection named {name!r}")
    return Redirect("connections?done=removed")
