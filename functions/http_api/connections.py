"""Connections: who may use which Constant Contact account, connecting it (OAuth),
and its lists and custom fields.

Admins create, change, connect and delete connections; anyone whose roles a
connection names may read it and its account's lists and fields
(shared.exports.access). A connection is never answered with its tokens.
"""

from __future__ import annotations

import html
from http.cookies import CookieError, SimpleCookie

import azure.durable_functions as df
import azure.functions as func

from functions.http_api.routes import (
    ANONYMOUS,
    CONNECTION_ROLES,
    Call,
    admins,
    app_path,
    json_answer,
    log_failure,
    public_origin,
    route,
    status_of,
    what_failed,
)
from functions.services import Services
from shared.config import Config
from shared.console.pages import CONSOLE_ROUTE
from shared.constant_contact.connect import PENDING_TTL
from shared.exports import account
from shared.exports.access import usable_connection, usable_connections
from shared.exports.authorizing import (
    BROWSER_COOKIE,
    browser_cookie_value,
    finish_authorization,
    read_account_name,
    read_browser_cookie,
    start_authorization,
)
from shared.exports.catalog import Connection, NotFound, Stored
from shared.exports.editing import new_list_name_of, save_connection

bp = df.Blueprint()

CALLBACK_ROUTE = "oauth/callback"


async def _connection_json(app: Services, connection: Connection) -> dict[str, object]:
    doc = connection.to_json()
    doc["status"] = (await app.catalog.status_of(connection)).value
    return doc


async def _connection_answer(
    app: Services, status: int, stored: Stored[Connection]
) -> func.HttpResponse:
    return json_answer(status, await _connection_json(app, stored.value), {"ETag": stored.etag})


@route(bp, "connections", GET=CONNECTION_ROLES)
async def connections_list(call: Call) -> func.HttpResponse:
    """The connections the caller may use (all of them, for an admin)."""
    found = [
        await _connection_json(call.app, stored.value)
        for stored in await usable_connections(call.app.catalog, call.caller)
    ]
    return json_answer(200, {"connections": found})


@route(
    bp,
    "connections/{name}",
    GET=CONNECTION_ROLES,
    PUT=admins("create or change connections"),
    DELETE=admins("delete connections"),
)
async def connection_item(call: Call) -> func.HttpResponse:
    """Read, create or update (admins), or delete with its tokens (admins)."""
    name, catalog = call.param("name"), call.app.catalog
    if call.method == "GET":
        return await _connection_answer(
            call.app, 200, await usable_connection(catalog, call.caller, name)
        )
    if call.method == "DELETE":
        if not await catalog.delete_connection(name, call.if_match()):
            raise NotFound(f"no connection named {name!r}")
        return func.HttpResponse(status_code=204)
    if_match = call.if_match()
    saved = await save_connection(
        catalog, name, call.body(), principal_id=call.caller.id, if_match=if_match
    )
    return await _connection_answer(call.app, 201 if if_match is None else 200, saved)


@route(bp, "connections/{name}/lists", GET=CONNECTION_ROLES, POST=CONNECTION_ROLES)
async def connection_lists(call: Call) -> func.HttpResponse:
    """The lists of the connection's account (name, id, members); ``POST {"name": ...}``
    creates one (201), or answers the existing list of that name (200)."""
    name = call.param("name")
    await usable_connection(call.app.catalog, call.caller, name)
    if call.method == "GET":
        async with call.app.accounts().client(name) as client:
            found = await account.account_lists(client)
        lists = [account.list_document(lst) for lst in found]
        return json_answer(200, {"connection": name, "lists": lists})
    list_name = new_list_name_of(call.body())
    async with call.app.accounts().client(name) as client:
        made, created = await client.create_or_find_list(list_name)
    doc = {"connection": name, "created": created, "list": account.list_document(made)}
    return json_answer(201 if created else 200, doc)


@route(bp, "connections/{name}/custom_fields", GET=CONNECTION_ROLES)
async def connection_custom_fields(call: Call) -> func.HttpResponse:
    """The custom fields of the connection's account (the names ``cf:NAME`` maps to)."""
    name = call.param("name")
    await usable_connection(call.app.catalog, call.caller, name)
    async with call.app.accounts().client(name) as client:
        found = await account.account_custom_fields(client)
    fields = [account.field_document(custom) for custom in found]
    return json_answer(200, {"connection": name, "custom_fields": fields})


def redirect_uri(config: Config, req: func.HttpRequest) -> str:
    """Where Constant Contact sends the browser back: CTCT_REDIRECT_URI, else this
    app's own callback route (it must be registered with the Constant Contact app)."""
    configured = config.ctct.redirect_uri
    if configured:
        return configured
    return f"{public_origin(req)}{app_path(CALLBACK_ROUTE)}"


@route(bp, "connections/{name}/connect", GET=admins("connect accounts"))
async def connection_connect(call: Call) -> func.HttpResponse:
    """Start connecting a Constant Contact account: redirect to its authorize page
    (authorization code with PKCE; state and verifier stay in the secret store)."""
    url, key = await start_authorization(
        call.app.catalog,
        call.app.connections,
        call.param("name"),
        redirect_uri(call.app.config, call.req),
    )
    return func.HttpResponse(
        status_code=302, headers={"Location": url, "Set-Cookie": browser_cookie(call.req, key)}
    )


def browser_cookie(req: func.HttpRequest, key: str, *, console: bool = False) -> str:
    """The key the browser brings back to the callback, and only there (marked when
    the console started the connect: the callback then leads back to its page). Lax,
    so the top-level redirect from Constant Contact carries it; Secure wherever the
    app is reached over HTTPS (serve on 127.0.0.1 is plain HTTP)."""
    cookie = (
        f"{BROWSER_COOKIE}={browser_cookie_value(key, console=console)}; "
        f"Path={app_path(CALLBACK_ROUTE)}; Max-Age={int(PENDING_TTL)}; HttpOnly; SameSite=Lax"
    )
    return cookie + "; Secure" if public_origin(req).startswith("https:") else cookie


def _browser_key(call: Call) -> tuple[str | None, bool]:
    """The browser's key, and whether the console started the connect."""
    jar = SimpleCookie()
    try:
        jar.load(call.req.headers.get("Cookie", ""))
    except CookieError:
        return None, False
    found = jar.get(BROWSER_COOKIE)
    return read_browser_cookie(found.value if found is not None else None)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ccexport: {title}</title></head>
<body><h1>{title}</h1><p>{what}</p><p>{then}</p>{link}</body></html>
"""
LINK = '<p><a href="{href}">{label}</a></p>'


PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
"""The callback's address holds the authorization code and state: the page keeps it
out of caches and referrers, and runs nothing."""

RECONNECT = (
    "An admin starts again by opening {connect} with the function key; the sign-in it "
    "leads to is good for one use, for a few minutes."
)
RECONNECT_IN_CONSOLE = (
    "An admin starts again with Connect on the connection's page in the console; the "
    "sign-in it leads to is good for one use, for a few minutes."
)


def console_connection_path(name: str = "") -> str:
    """The console's page of a connection (its list without a name): where a connect
    started on the console ends. Built here, not imported: the console's functions
    import this module."""
    return app_path(f"{CONSOLE_ROUTE}/connections" + (f"/{name}" if name else ""))


def callback_page(
    status: int, title: str, what: str, then: str, link: tuple[str, str] | None = None
) -> func.HttpResponse:
    """A short page for the person whose browser Constant Contact sent back: what
    happened and what to do next, and ``link`` (label, href) to where they do it.
    Every text is ccexport's own, escaped."""
    shown = (
        "" if link is None else LINK.format(label=html.escape(link[0]), href=html.escape(link[1]))
    )
    body = PAGE.format(
        title=html.escape(title), what=html.escape(what), then=html.escape(then), link=shown
    )
    return func.HttpResponse(
        body, status_code=status, mimetype="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


def _refused_page(call: Call, exc: Exception, console: bool) -> func.HttpResponse:
    """Why the callback connected nothing, by the kind of error alone: its text may
    quote Constant Contact or Key Vault (the tenant, the identity), and whoever holds
    the browser is anonymous. The detail goes to the log under the reference shown.
    A connect started on the console is sent back there to start again."""
    status = status_of(exc)
    ref = log_failure("OAuth callback", exc, status)
    connect = app_path("connections/<name>/connect")
    reference = f"Reference for the administrator: {ref}."
    link = ("Back to the connections", console_connection_path()) if console else None
    reconnect = RECONNECT_IN_CONSOLE if console else RECONNECT.format(connect=connect)
    if status >= 500:
        what = f"ccexport could not finish connecting: {what_failed(exc)}."
        then = f"Try again in a few minutes; if it fails again, tell an admin. {reference}"
        return callback_page(status, "Not connected", what, then, link)
    if status == 404:
        what = "The connection was removed while the account was being signed in."
        then = (
            "An admin adds it again on the console's connections page first."
            if console
            else "An admin creates it again (PUT " + app_path("connections/<name>") + ") first."
        )
    elif "error" in call.req.params:
        what = "Constant Contact sent the browser back without granting access."
        then = reconnect
    else:
        what = (
            "This sign-in could not be used: it is unknown, expired or already used, or "
            "Constant Contact did not accept it. Nothing was stored."
        )
        then = reconnect
    return callback_page(status, "Not connected", what, f"{then} {reference}", link)


@route(bp, CALLBACK_ROUTE, GET=ANONYMOUS)
async def oauth_callback(call: Call) -> func.HttpResponse:
    """Constant Contact's redirect back. Anonymous, because the browser arrives
    without the function key (and OAuth's ``code`` would clash with the key's query
    parameter); the single-use, unguessable state is what admits it.

    Answers a short HTML page, since a person's browser shows it; its status says
    whether the account was connected (200), the sign-in could not be used (400),
    the connection is gone (404) or ccexport failed (5xx). A connect started on the
    console's page ends back there instead (303), where the page shows the connection
    connected and the account it reached.
    """
    key, console = _browser_key(call)
    try:
        connection = await finish_authorization(
            call.app.catalog,
            call.app.connections,
            call.req.params,
            redirect_uri(call.app.config, call.req),
            key,
            account_name=lambda name: read_account_name(call.app.accounts(), name),
        )
    except Exception as exc:
        return _refused_page(call, exc, console)
    if console:
        back = console_connection_path(connection.name) + "?done=connected"
        return func.HttpResponse(status_code=303, headers={**PAGE_HEADERS, "Location": back})
    what = f"The Constant Contact account is now connected as {connection.name!r}."
    then = "You can close this page. Exports over this connection send on their next run."
    return callback_page(200, "Connected", what, then)
