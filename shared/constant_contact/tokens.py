"""One connection's access token: refreshed ahead of expiry, one refresh at a time,
rotation survived; and the names of the secrets a connection keeps.

Refresh tokens may rotate, and a rotated-away refresh token answers ``invalid_grant``
for good (see ``oauth``). So:

- a connection's tokens are ONE JSON secret (``TokenBundle``, under
  ``tokens_secret``): one write replaces access token, refresh token and expiry
  together;
- a refresh runs under a lock that holds across processes and instances; whoever
  waited for it re-reads the store and uses what the holder stored;
- a new bundle is stored before its access token is used; if that store fails after
  the refresh token rotated, the connection is marked as needing re-authorisation
  (a small status secret, ``status_secret``, read by ``read_status``) and the caller
  gets a clear error, never a silently dead connection for the next run.

The secret names of a connection (tokens, status, and the pending authorization of
``connect``) live here, in one place, because the catalog deletes them together.
Tokens never reach a log line or an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from shared.constant_contact.connections import check_connection
from shared.constant_contact.oauth import InvalidGrant, OAuthClient, TokenBundle
from shared.errors import ReauthorizationRequired
from shared.secrets.store import SecretStore, SecretStoreError
from shared.storage.locks import Locks

log = logging.getLogger(__name__)


# --- the secrets and the lock of a connection ---------------------------------------------


def tokens_secret(connection: str) -> str:
    return f"ctct-tokens-{connection}"


def status_secret(connection: str) -> str:
    return f"ctct-status-{connection}"


def pending_secret(connection: str) -> str:
    return f"ctct-pending-{connection}"


def lock_name(connection: str) -> str:
    return f"ctct-tokens-{connection}"


# --- one connection's access token --------------------------------------------------------


class TokenManager:
    """A valid access token for one connection, refreshed ahead of expiry, one refresh
    at a time across every process and instance that shares the store and the locks.

    Pass ``manager.access_token`` as the client's token provider.
    """

    def __init__(
        self,
        connection: str,
        store: SecretStore,
        locks: Locks,
        oauth: OAuthClient,
        *,
        refresh_margin: float = 300.0,
        lock_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = check_connection(connection)
        self._store = store
        self._locks = locks
        self._oauth = oauth
        self._margin = refresh_margin
        self._lock_timeout = lock_timeout
        self._clock = clock
        self._bundle: TokenBundle | None = None
        self._local: asyncio.Lock | None = None  # made on first use, inside a loop
        self.refreshes = 0  # refreshes this manager made at the token endpoint
        self.source = ""  # where the last token came from: cache, store or refresh

    @property
    def expires_at(self) -> float | None:
        return self._bundle.expires_at if self._bundle else None

    @property
    def scope(self) -> str:
        return self._bundle.scope if self._bundle else ""

    def _fresh(self, bundle: TokenBundle | None) -> bool:
        return bundle is not None and bundle.fresh(self._clock(), self._margin)

    async def access_token(self, force_refresh: bool = False) -> str:
        """A valid access token. ``force_refresh``: the last one was refused (401)."""
        seen = self._bundle
        if not force_refresh and seen is not None and self._fresh(seen):
            self.source = "cache"
            return seen.access_token
        if self._local is None:
            self._local = asyncio.Lock()
        async with self._local:  # one refresher per manager; the rest reuse its result
            current = self._bundle
            if current is not None and current is not seen and self._fresh(current):
                self.source = "cache"
                return current.access_token
            rejected = seen.access_token if force_refresh and seen is not None else None
            if not force_refresh:
                stored = await self._load()
                if stored is not None and self._fresh(stored):
                    return self._use(stored, "store")
            return await self._refresh_under_lock(rejected)

    def _use(self, bundle: TokenBundle, source: str) -> str:
        self._bundle = bundle
        self.source = source
        return bundle.access_token

    async def _refresh_under_lock(self, rejected: str | None) -> str:
        async with self._locks.hold(lock_name(self.connection), timeout=self._lock_timeout) as held:
            stored = await self._load()  # whoever held the lock before may have refreshed
            if stored is None:
                raise ReauthorizationRequired(self.connection, "no tokens are stored for it")
            if self._fresh(stored) and stored.access_token != rejected:
                return self._use(stored, "store")
            marked = await read_status(self._store, self.connection)
            if marked is not None:
                raise ReauthorizationRequired(self.connection, marked)
            if not stored.refresh_token:
                raise ReauthorizationRequired(
                    self.connection, "its tokens have no refresh token (offline_access missing?)"
                )
            # The token endpoint allows 1 request/s per client, whoever sends it: the
            # last token request of this connection is in the store, so wait out the gap.
            gap = stored.issued_at + self._oauth.min_interval - self._clock()
            if gap > 0:
                await asyncio.sleep(gap)
            held.ensure_held()  # never spend a rotating refresh token without the lock
            try:
                fresh = await self._oauth.refresh(stored.refresh_token)
            except InvalidGrant:
                reason = "Constant Contact refused its refresh token (invalid_grant)"
                await mark_needs_reauthorization(self._store, self.connection, reason)
                raise ReauthorizationRequired(self.connection, reason) from None
            self.refreshes += 1
            rotated = fresh.refresh_token != stored.refresh_token
            try:
                await self._store.set(
                    tokens_secret(self.connection), fresh.to_json(), content_type="application/json"
                )
            except SecretStoreError as exc:
                if not rotated:
                    # The stored refresh token still works: only this copy is lost.
                    log.warning(
                        "connection %r: refreshed tokens not stored (%s); the stored refresh "
                        "token is unchanged and still valid", self.connection, exc,
                    )  # fmt: skip
                    return self._use(fresh, "refresh")
                reason = f"its rotated tokens could not be stored ({exc})"
                await mark_needs_reauthorization(self._store, self.connection, reason)
                raise ReauthorizationRequired(self.connection, reason) from None
            log.info("connection %r: access token refreshed and stored", self.connection)
            return self._use(fresh, "refresh")

    async def _load(self) -> TokenBundle | None:
        raw = await self._store.get(tokens_secret(self.connection))
        if raw is None:
            return None
        try:
            return TokenBundle.from_json(raw)
        except ValueError:
            raise ReauthorizationRequired(
                self.connection, "its stored tokens are unreadable"
            ) from None


# --- connection status -------------------------------------------------------------------


async def read_status(store: SecretStore, connection: str) -> str | None:
    """The reason a connection needs re-authorisation, or None when it does not."""
    raw = await store.get(status_secret(connection))
    if raw is None:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "its status record is unreadable"
    if isinstance(doc, dict) and doc.get("needs_reauthorization"):
        return str(doc.get("reason") or "it was marked as needing re-authorisation")
    return None


async def mark_needs_reauthorization(store: SecretStore, connection: str, reason: str) -> None:
    """Record why a connection must be reconnected; best effort, never raises."""
    record = {
        "needs_reauthorization": True,
        "reason": reason,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        await store.set(
            status_secret(connection),
            orjson.dumps(record).decode(),
            content_type="application/json",
        )
    except SecretStoreError as exc:
        log.error("connection %r: could not record that it needs reconnecting: %s", connection, exc)
    else:
        log.error("connection %r needs to be reconnected: %s", connection, reason)
