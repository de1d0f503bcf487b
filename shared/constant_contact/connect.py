"""Connecting an account: the authorization code flow, server side, and the token
managers of connected accounts.

``Connections.start_authorization`` and ``complete_authorization`` are the two halves
of the flow that the function app's HTTP API and ``ccexport connect`` both use: the
pending state (state, PKCE verifier, expiry) is kept in the secret store, so the
callback may land on another instance; the callback's state is checked in constant
time, used once, and must be unexpired. Kept apart from ``tokens`` (which keeps a
connected account's token valid) because only an admin's connect starts this, while
every run uses the other.

States, codes and verifiers never reach a log line or an error.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.constant_contact.connections import check_connection
from shared.constant_contact.oauth import (
    InvalidGrant,
    OAuthClient,
    TokenBundle,
    code_challenge,
    new_code_verifier,
)
from shared.constant_contact.tokens import (
    TokenManager,
    lock_name,
    pending_secret,
    read_status,
    status_secret,
    tokens_secret,
)
from shared.errors import AuthorizationError
from shared.secrets.store import SecretStore
from shared.storage.locks import Locks

log = logging.getLogger(__name__)

PENDING_TTL = 600.0  # a pending authorization; the code itself lives 5 minutes


# --- connecting: the authorization code flow, server side ------------------------------------


@dataclass(frozen=True)
class PendingAuthorization:
    """What a started authorization must remember until its callback (server side)."""

    state: str = field(repr=False)
    code_verifier: str = field(repr=False)
    redirect_uri: str
    expires_at: float

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "state": self.state,
                "code_verifier": self.code_verifier,
                "redirect_uri": self.redirect_uri,
                "expires_at": self.expires_at,
            }
        ).decode()


class Connections:
    """Connect accounts and hand out token managers, over one store, locks and client.

    ``start_authorization`` and ``complete_authorization`` are the two halves of the
    authorization code flow that the function app's HTTP API and ``ccexport connect``
    both use: the pending state (state, PKCE verifier, expiry) is kept in the secret
    store, so the callback may land on another instance.
    """

    def __init__(
        self,
        store: SecretStore,
        locks: Locks,
        oauth: OAuthClient,
        *,
        refresh_margin: float = 300.0,
        lock_timeout: float = 60.0,
        pending_ttl: float = PENDING_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.locks = locks
        self.oauth = oauth
        self._margin = refresh_margin
        self._lock_timeout = lock_timeout
        self._pending_ttl = pending_ttl
        self._clock = clock

    def tokens(self, connection: str) -> TokenManager:
        return TokenManager(
            connection,
            self.store,
            self.locks,
            self.oauth,
            refresh_margin=self._margin,
            lock_timeout=self._lock_timeout,
            clock=self._clock,
        )

    async def start_authorization(
        self, connection: str, redirect_uri: str
    ) -> tuple[str, PendingAuthorization]:
        """The authorize URL to send the user to, and the state kept for the callback.

        Starting again replaces an earlier pending authorization of the connection.
        """
        check_connection(connection)
        pending = PendingAuthorization(
            state=secrets.token_urlsafe(32),
            code_verifier=new_code_verifier(),
            redirect_uri=redirect_uri,
            expires_at=self._clock() + self._pending_ttl,
        )
        await self.store.set(
            pending_secret(connection), pending.to_json(), content_type="application/json"
        )
        url = self.oauth.authorize_url(
            redirect_uri, pending.state, code_challenge(pending.code_verifier)
        )
        return url, pending

    async def complete_authorization(
        self, connection: str, state: str, code: str, redirect_uri: str
    ) -> TokenBundle:
        """Check the callback's state (constant time, single use, unexpired), exchange
        the code, and store the tokens. AuthorizationError for anything forged,
        expired or replayed."""
        check_connection(connection)
        async with self.locks.hold(lock_name(connection), timeout=self._lock_timeout):
            pending = await self._pending(connection)
            if not hmac.compare_digest(pending["state"].encode(), state.encode()):
                # A forged state does not burn the real pending authorization.
                raise AuthorizationError(
                    f"the authorization callback for connection {connection!r} does not match "
                    "the authorization that was started (state mismatch)"
                )
            await self.store.set(pending_secret(connection), '{"used": true}')  # single use
            if float(pending["expires_at"]) <= self._clock():
                raise AuthorizationError(
                    f"the authorization of connection {connection!r} expired; start it again"
                )
            if pending["redirect_uri"] != redirect_uri:
                raise AuthorizationError("the callback's redirect URI is not the one authorized")
            try:
                bundle = await self.oauth.exchange_code(
                    code, redirect_uri, str(pending["code_verifier"])
                )
            except InvalidGrant as exc:
                raise AuthorizationError(
                    f"Constant Contact refused the authorization code of connection "
                    f"{connection!r}: {exc}"
                ) from None
            if not bundle.refresh_token:
                log.warning("connection %r: no refresh token was granted", connection)
            await self.store.set(
                tokens_secret(connection), bundle.to_json(), content_type="application/json"
            )
            if await read_status(self.store, connection) is not None:
                await self.store.set(
                    status_secret(connection),
                    orjson.dumps({"needs_reauthorization": False}).decode(),
                    content_type="application/json",
                )
            log.info("connection %r connected (scope %s)", connection, bundle.scope)
            return bundle

    async def _pending(self, connection: str) -> dict[str, Any]:
        raw = await self.store.get(pending_secret(connection))
        doc: Any = None
        if raw is not None:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = None
        if not isinstance(doc, dict) or doc.get("used") or not isinstance(doc.get("state"), str):
            raise AuthorizationError(
                f"no authorization is pending for connection {connection!r} (already used, "
                "or never started); start it again"
            )
        return doc
