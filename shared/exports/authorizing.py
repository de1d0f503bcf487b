"""Connecting a connection's Constant Contact account from the HTTP API.

The authorization-code flow with PKCE (shared.constant_contact.connect) runs between
two requests: the start remembers, under the state, which connection it is for; the
callback finds the connection from the state alone, since the browser that brings
it back carries nothing else. An unknown, expired or used state admits nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from shared.constant_contact.connect import PENDING_TTL
from shared.errors import AuthorizationError
from shared.exports.catalog import Catalog, Connection

if TYPE_CHECKING:
    from shared.constant_contact.connect import Connections

OpenConnections = Callable[[], Awaitable["Connections"]]
"""The OAuth side, opened only once a request has got that far (it needs the client
id and secret)."""

_OAUTH_ERROR = re.compile(r"[A-Za-z0-9_.-]{1,64}")


async def start_authorization(
    catalog: Catalog, open_connections: OpenConnections, name: str, redirect_uri: str
) -> str:
    """The authorize URL to send the browser to, for a connection that exists."""
    await catalog.require_connection(name)
    connections = await open_connections()
    url, pending = await connections.start_authorization(name, redirect_uri)
    await catalog.remember_authorization(pending.state, name, PENDING_TTL)
    return url


async def finish_authorization(
    catalog: Catalog,
    open_connections: OpenConnections,
    params: Mapping[str, str],
    redirect_uri: str,
) -> Connection:
    """Complete the authorization the callback's query (``state``, then ``code`` or
    ``error``) belongs to, and mark its connection connected.

    A refusal forgets the state, so it cannot be tried again; the error code
    Constant Contact sent is only repeated if it looks like one.
    """
    state = params.get("state", "")
    if not state:
        raise AuthorizationError("the callback carries no state")
    name = await catalog.authorization_connection(state)
    if name is None:
        raise AuthorizationError(
            "this authorization is unknown, expired or already used; start it again"
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
    return await catalog.mark_connected(name)
