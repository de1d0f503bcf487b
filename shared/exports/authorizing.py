"""Connecting a connection's Constant Contact account from the HTTP API and the console.

The authorization-code flow with PKCE (shared.constant_contact.connect) runs between
two requests: the start remembers, under the state, which connection it is for; the
callback finds the connection from the state, and admits it only from the browser that
started it (the key in its cookie). An unknown, expired or used state, or another
browser, admits nothing, and a refusal spends the state. Once connected, the account's
organization name is read and kept on the connection, for the pages that show it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from shared.constant_contact.connect import PENDING_TTL
from shared.constant_contact.transport import scrub
from shared.errors import AuthorizationError
from shared.exports.catalog import Catalog, Connection

if TYPE_CHECKING:
    from shared.constant_contact.connect import Connections
    from shared.exports.account import AccountAccess

log = logging.getLogger(__name__)

OpenConnections = Callable[[], Awaitable["Connections"]]
"""The OAuth side, opened only once a request has got that far (it needs the client
id and secret)."""

AccountName = Callable[[str], Awaitable["str | None"]]
"""Reads the organization name of a connection's account (``read_account_name``)."""

_OAUTH_ERROR = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_ACCOUNT_NAME = 200


BROWSER_COOKIE = "ccexport_connect"
"""The cookie that binds an authorization to the browser of the admin who started it."""


FROM_CONSOLE = ".console"
"""Marks the binding cookie of a connect started on the console's page, so that the
callback leads the browser back there (the key itself never holds a dot)."""


def browser_cookie_value(key: str, *, console: bool) -> str:
    """What ``BROWSER_COOKIE`` holds: the browser's key, marked when the console
    started the connect."""
    return key + FROM_CONSOLE if console else key


def read_browser_cookie(value: str | None) -> tuple[str | None, bool]:
    """The browser's key in ``BROWSER_COOKIE``'s value, and whether the console
    started the connect."""
    if not value:
        return None, False
    if value.endswith(FROM_CONSOLE):
        return value.removesuffix(FROM_CONSOLE) or None, True
    return value, False


def browser_digest(key: str) -> str:
    """What is stored of a browser's key: its digest, so the stored record admits no one."""
    return hashlib.sha256(key.encode()).hexdigest()


async def start_authorization(
    catalog: Catalog, open_connections: OpenConnections, name: str, redirect_uri: str
) -> tuple[str, str]:
    """The authorize URL to send the browser to, for a connection that exists, and the
    key that browser must bring back to the callback (set as ``BROWSER_COOKIE``).

    The key binds the authorization to the admin's own browser: someone else who
    completes it (a link passed on, a page that sends a victim's browser to the
    callback with the attacker's code) arrives without it and connects nothing.
    """
    await catalog.require_connection(name)
    connections = await open_connections()
    url, pending = await connections.start_authorization(name, redirect_uri)
    key = secrets.token_urlsafe(32)
    await catalog.remember_authorization(
        pending.state, name, PENDING_TTL, browser=browser_digest(key)
    )
    return url, key


async def finish_authorization(
    catalog: Catalog,
    open_connections: OpenConnections,
    params: Mapping[str, str],
    redirect_uri: str,
    browser_key: str | None,
    *,
    account_name: AccountName | None = None,
) -> Connection:
    """Complete the authorization the callback's query (``state``, then ``code`` or
    ``error``) belongs to, and mark its connection connected, with the name of the
    account it reached when ``account_name`` can read it.

    A refusal forgets the state, so it cannot be tried again; the error code
    Constant Contact sent is only repeated if it looks like one.
    """
    state = params.get("state", "")
    if not state:
        raise AuthorizationError("the callback carries no state")
    pending = await catalog.pending_authorization(state)
    if pending is None:
        raise AuthorizationError(
            "this authorization is unknown, expired or already used; start it again"
        )
    name, browser = pending
    if (
        not browser
        or not browser_key
        or not hmac.compare_digest(browser, browser_digest(browser_key))
    ):
        await catalog.forget_authorization(state)
        raise AuthorizationError(
            "this authorization was started in another browser: the admin who connects "
            "starts again and finishes in the same browser"
        )
    error = params.get("error")
    if error is not None:
        await catalog.forget_authorization(state)
        shown = error if _OAUTH_ERROR.fullmatch(error) else "error"
        raise AuthorizationError(f"Constant Contact did not authorize {name!r}: {shown}")
    code = params.get("code", "")
    if not code:
        raise AuthorizationError("the callback carries no authorization code")
    connections = await open_connections()
    await connections.complete_authorization(name, state, code, redirect_uri)
    await catalog.forget_authorization(state)
    reached = await account_name(name) if account_name is not None else None
    return await catalog.mark_connected(name, account_name=reached)


async def read_account_name(accounts: AccountAccess, connection: str) -> str | None:
    """The organization name of the account ``connection`` reaches, or None when it
    cannot be read.

    Read once, when the account has just been connected, and kept on the connection:
    showing it then costs no request (no share of the rate limit or the daily quota,
    no wait, nothing to fail when the account needs reconnecting). Best effort: the
    tokens are stored by now, and a connection whose name cannot be read (a token
    granted before ccexport asked for ``account_read``, a refusal, an outage) is
    connected all the same, shown by when it connected.
    """
    try:
        async with accounts.client(connection) as client:
            name = await client.organization_name()
    except Exception as exc:  # best effort: the connect itself succeeded
        log.warning(
            "connection %r: the account's organization name was not read (%s)",
            connection,
            scrub(f"{type(exc).__name__}: {exc}"),
        )
        return None
    return name[:_MAX_ACCOUNT_NAME] if name else None
