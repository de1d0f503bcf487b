"""OAuth for Constant Contact: authorization code + PKCE, refresh, rotation, one refresh at a time.

Facts this follows (FACTS.md §6): scopes ``contact_data offline_access`` (the second
is what yields a refresh token); the token endpoint takes HTTP Basic client
authentication and allows 1 request/s; codes are single-use and live 5 minutes;
refresh tokens may rotate, and a rotated-away refresh token answers
``invalid_grant`` for good. So:

- a connection's tokens are ONE JSON secret (``TokenBundle``): one write replaces
  access token, refresh token and expiry together;
- a refresh runs under a lock that holds across processes and instances; whoever
  waited for it re-reads the store and uses what the holder stored;
- a new bundle is stored before its access token is used; if that store fails after
  the refresh token rotated, the connection is marked as needing re-authorisation
  (a small status secret) and the caller gets a clear error, never a silently dead
  connection for the next run.

Tokens, codes, verifiers and the client secret never reach a log line or an error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from shared.constant_contact.connections import check_connection
from shared.constant_contact.pacing import Pacer
from shared.errors import (
    AuthorizationError,
    ConfigError,
    ReauthorizationRequired,
    RemoteError,
)
from shared.secrets.store import SecretStore, SecretStoreError
from shared.storage.locks import Locks

log = logging.getLogger(__name__)

SCOPE = "contact_data offline_access"
PENDING_TTL = 600.0  # a pending authorization; the code itself lives 5 minutes


def tokens_secret(connection: str) -> str:
    return f"ctct-tokens-{connection}"


def status_secret(connection: str) -> str:
    return f"ctct-status-{connection}"


def pending_secret(connection: str) -> str:
    return f"ctct-pending-{connection}"


def lock_name(connection: str) -> str:
    return f"ctct-tokens-{connection}"


# --- PKCE ---------------------------------------------------------------------------


def new_code_verifier() -> str:
    """43-128 unreserved characters (RFC 7636 §4.1): 64 here."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def authorize_url(
    auth_base: str,
    client_id: str,
    redirect_uri: str,
    state: str,
    challenge: str,
    *,
    scope: str = SCOPE,
) -> str:
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{auth_base.rstrip('/')}/authorize?{query}"


# --- the token bundle -------------------------------------------------------------------


@dataclass(frozen=True)
class TokenBundle:
    """What one connection holds; stored whole as one JSON secret."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float  # epoch seconds
    scope: str = ""
    issued_at: float = 0.0

    def fresh(self, now: float, margin: float) -> bool:
        """Usable without a refresh: more than ``margin`` left (or a tenth of its
        lifetime, for tokens that live shorter than ten margins, as in tests)."""
        lifetime = max(self.expires_at - self.issued_at, 0.0)
        return self.expires_at - now > min(margin, lifetime / 10)

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at,
                "issued_at": self.issued_at,
                "scope": self.scope,
            }
        ).decode()

    @classmethod
    def from_json(cls, raw: str) -> TokenBundle:
        try:
            doc = orjson.loads(raw)
            return cls(
                access_token=str(doc["access_token"]),
                refresh_token=doc.get("refresh_token"),
                expires_at=float(doc["expires_at"]),
                scope=str(doc.get("scope", "")),
                issued_at=float(doc.get("issued_at", 0.0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError("not a token bundle") from None

    @classmethod
    def from_response(
        cls, doc: Any, now: float, previous_refresh: str | None = None
    ) -> TokenBundle:
        """From a token response; a response without a refresh token keeps the old one."""
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise RemoteError("the token endpoint answered without an access token")
        expires_in = doc.get("expires_in")
        # Documented as a timestamp by the generated client, seconds in practice
        # (FACTS §6, UNCONFIRMED): read it as seconds-to-expiry; 24 h if absent.
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 86_400.0
        refresh = doc.get("refresh_token")
        return cls(
            access_token=doc["access_token"],
            refresh_token=refresh if isinstance(refresh, str) and refresh else previous_refresh,
            expires_at=now + lifetime,
            scope=str(doc.get("scope", "")),
            issued_at=now,
        )


# --- the token endpoint -----------------------------------------------------------------


class InvalidGrant(Exception):
    """The authorization server refused a code or refresh token (``invalid_grant``)."""


_TOKEN_PACER = Pacer(1.0)  # the token endpoint's own limit: 1 request/s per process


class OAuthClient:
    """Calls the token endpoint: code exchange and refresh, with bounded retries.

    The docs show the token parameters in the query string; a form-encoded body is
    the OAuth standard and is sent here instead, so codes and refresh tokens never
    sit in a URL (where proxies and access logs keep them). Whether Constant
    Contact accepts the body form is UNCONFIRMED (FACTS §6; it looks Okta-based,
    which does); the sandbox accepts both.
    """

    def __init__(
        self,
        auth_base: str,
        client_id: str,
        client_secret: str | None,
        *,
        pacer: Pacer | None = None,
        attempts: int = 4,
        backoff_base: float = 1.0,
        timeout: float = 30.0,
    ) -> None:
        self.auth_base = auth_base.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._pacer = pacer or _TOKEN_PACER
        self._attempts = attempts
        self._backoff = backoff_base
        self._timeout = timeout
        self.requests = 0

    @property
    def min_interval(self) -> float:
        """Seconds between two token requests, with a margin for arrival jitter."""
        return 1.0 / self._pacer.rate + 0.1

    @property
    def token_url(self) -> str:
        return f"{self.auth_base}/token"

    def authorize_url(self, redirect_uri: str, state: str, challenge: str) -> str:
        return authorize_url(self.auth_base, self.client_id, redirect_uri, state, challenge)

    async def exchange_code(self, code: str, redirect_uri: str, verifier: str) -> TokenBundle:
        params = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        now = time.time()
        return TokenBundle.from_response(await self._token_request(params, {code, verifier}), now)

    async def refresh(self, refresh_token: str) -> TokenBundle:
        params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        now = time.time()
        doc = await self._token_request(params, {refresh_token})
        return TokenBundle.from_response(doc, now, previous_refresh=refresh_token)

    async def _token_request(self, params: dict[str, str], hidden: set[str]) -> Any:
        headers = {"Accept": "application/json"}
        if self._secret:
            raw = f"{self.client_id}:{self._secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
            hidden = {*hidden, self._secret}
        else:
            params = {**params, "client_id": self.client_id}  # a public PKCE client
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        attempt = 0
        while True:
            attempt += 1
            await self._pacer.wait()
            self.requests += 1
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.post(self.token_url, data=params, headers=headers) as response,
                ):
                    status, body = response.status, await response.read()
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                # A refresh lost in flight may have rotated the token already; the
                # retry then gets invalid_grant, reported as needing reconnection.
                what = f"connection error ({type(exc).__name__})"
                if attempt >= self._attempts:
                    raise RemoteError(
                        f"token endpoint: {what}; gave up after {attempt} attempts"
                    ) from None
                await self._sleep(attempt, what)
                continue
            log.debug("POST /token -> %d (attempt %d)", status, attempt)
            if status == 200:
                try:
                    return orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise RemoteError("the token endpoint sent malformed JSON") from None
            error, description = _oauth_error(body, hidden)
            if status == 400 and error == "invalid_grant":
                raise InvalidGrant(description or "invalid_grant")
            if status == 401 or error == "invalid_client":
                raise ConfigError(
                    "Constant Contact refused the client credentials (CTCT_CLIENT_ID and the "
                    f"client secret): {error or status}"
                )
            if (status == 429 or status >= 500) and attempt < self._attempts:
                if status == 429:
                    self._pacer.hold_off(self._backoff * attempt)
                await self._sleep(attempt, f"HTTP {status}")
                continue
            raise RemoteError(
                f"token endpoint refused the request ({status}): {error}"
                + (f": {description}" if description else "")
                + (f" (after {attempt} attempts)" if attempt > 1 else ""),
                status=status,
            )

    async def _sleep(self, attempt: int, what: str) -> None:
        delay = min(self._backoff * 2 ** (attempt - 1), 16.0)
        log.warning("token endpoint: %s (attempt %d); retrying in %.1fs", what, attempt, delay)
        await asyncio.sleep(delay)


def _oauth_error(body: bytes, hidden: set[str]) -> tuple[str, str]:
    """(error, description) of an OAuth error body, without anything we sent."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        doc = doc[0]
    if not isinstance(doc, dict):
        return "", ""
    error = str(doc.get("error") or doc.get("error_key") or "")
    description = str(doc.get("error_description") or doc.get("error_message") or "")[:300]
    for value in hidden:
        if value:
            error = error.replace(value, "***")
            description = description.replace(value, "***")
    return error[:100], description


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
