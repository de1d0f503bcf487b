"""OAuth with Constant Contact's authorization server: authorization code + PKCE, the
token endpoint, and the token bundle it yields.

What the server does (``/authorize`` and ``/token`` in contract/constant-contact-v3.yaml):
the scopes are ``contact_data account_read offline_access`` (contacts and lists; the
account's organization name, shown to admins; a refresh token); the token endpoint
takes HTTP Basic client authentication (a public PKCE client sends ``client_id``
instead) and allows 1 request/s; codes are single-use and live 5 minutes; refresh
tokens may rotate, and a rotated-away refresh token answers ``invalid_grant`` for good
(``InvalidGrant`` here). Kept apart from ``tokens``, which decides when to refresh and
where the result is kept: this module only talks to the server.

Tokens, codes, verifiers and the client secret never reach a log line or an error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from shared.constant_contact.pacing import Pacer
from shared.errors import ConfigError, RemoteError

log = logging.getLogger(__name__)

SCOPE = "contact_data account_read offline_access"


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
        # Seconds the access token lives (the contract's TokenResponse; generated
        # clients have called it a timestamp): read as seconds-to-expiry, 24 h if absent.
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

    The developer guide shows the token parameters in the query string; a form-encoded
    body is the OAuth standard and is sent here instead, so codes and refresh tokens
    never sit in a URL (where proxies and access logs keep them). That Constant
    Contact accepts the body form is not confirmed (its authorization server looks
    Okta-based, which does); ``/token`` in contract/constant-contact-v3.yaml describes
    both forms, and the sandbox accepts both.
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
