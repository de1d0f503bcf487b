"""The authorization server: authorization code + PKCE, refresh, rotation, expiry.

Modelled on Constant Contact's documented behaviour (the ``/authorize`` and ``/token``
operations of contract/constant-contact-v3.yaml):

- ``GET /oauth2/default/v1/authorize`` approves consent at once and redirects to
  ``redirect_uri`` with ``code`` and ``state``, so a client completes the flow without
  a browser. PKCE: ``code_challenge`` with ``code_challenge_method=S256``.
- ``POST /oauth2/default/v1/token`` with HTTP Basic client authentication; parameters
  in the query string (as the docs show) or a form body (accepted too). Public PKCE
  clients may send ``client_id`` without a secret when they prove the code verifier.
- Codes are single-use and live 5 minutes. ``offline_access`` is needed for a refresh
  token.
- Access tokens (JWT-shaped, HS256 with a per-sandbox key) live ``access_token_ttl``.
- Refresh tokens are long-lived (the same value comes back on every refresh) or, with
  rotation, single-use: each refresh returns a new one and every earlier refresh token
  of that authorization becomes invalid (``invalid_grant``). Rotation is tracked per
  authorization (per code exchange). Unused refresh tokens expire after 180 days.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from aiohttp import web

from sandbox import wire

SCOPES = frozenset(
    {"account_read", "account_update", "contact_data", "campaign_data", "billing_data",
     "offline_access", "openid", "profile", "email"}
)  # fmt: skip


@dataclass
class AuthCode:
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str | None
    expires_at: float


@dataclass
class Grant:
    """One authorization of the app by the account (one code exchange)."""

    grant_id: str
    scopes: tuple[str, ...]
    public: bool
    refresh_token: str | None = None
    refresh_expires_at: float = 0.0


@dataclass
class AccessToken:
    grant_id: str
    scopes: tuple[str, ...]
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of a verifier (RFC 7636 §4.2)."""
    return _b64(hashlib.sha256(verifier.encode()).digest())


class OAuthServer:
    """Issues and checks the tokens of the one client (API key) the sandbox knows."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        rotating: bool,
        access_ttl: float,
        refresh_ttl: float,
        code_ttl: float,
        redirect_uris: tuple[str, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self._secret = client_secret
        self.rotating = rotating
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.code_ttl = code_ttl
        self.redirect_uris = redirect_uris
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._codes: dict[str, AuthCode] = {}
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, Grant] = {}
        self.invalid_grant = 0
        self.tokens_issued = 0

    # -- bearer tokens on /v3 ---------------------------------------------------------

    def authenticate(self, authorization: str | None) -> AccessToken | None:
        """The live access token behind an ``Authorization: Bearer`` header, if any."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = self._access.get(authorization[7:].strip())
        if token is None:
            return None
        if token.expires_at <= self.clock():
            del self._access[authorization[7:].strip()]
            return None
        return token

    # -- issuing ------------------------------------------------------------------------

    def _jwt(self, issuer: str, scopes: tuple[str, ...], now: float, ttl: float) -> str:
        header = {"alg": "HS256", "typ": "JWT", "kid": "sandbox"}
        claims = {
            "ver": 1, "jti": str(uuid.uuid4()), "iss": issuer, "aud": "https://api.cc.email/v3",
            "iat": int(now), "exp": int(now + ttl), "cid": self.client_id, "uid": "sandbox-user",
            "sub": "sandbox-user@example.com", "scp": list(scopes),
        }  # fmt: skip
        signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
        signature = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    def issue(self, grant: Grant, issuer: str, *, new_refresh: bool) -> dict[str, Any]:
        """A token response for the grant; a new refresh token when asked (or first)."""
        now = self.clock()
        access = self._jwt(issuer, grant.scopes, now, self.access_ttl)
        self._access[access] = AccessToken(grant.grant_id, grant.scopes, now + self.access_ttl)
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(self.access_ttl),
            "scope": " ".join(grant.scopes),
        }
        if "offline_access" in grant.scopes:
            if new_refresh or grant.refresh_token is None:
                if grant.refresh_token is not None:
                    self._refresh.pop(grant.refresh_token, None)  # superseded: now invalid
                grant.refresh_token = secrets.token_urlsafe(32)
                self._refresh[grant.refresh_token] = grant
            grant.refresh_expires_at = now + self.refresh_ttl
            body["refresh_token"] = grant.refresh_token
        self.tokens_issued += 1
        return body

    def mint(self, scopes: tuple[str, ...], issuer: str) -> dict[str, Any]:
        """A fresh authorization without the browser dance (``/__sandbox/tokens``)."""
        grant = Grant(str(uuid.uuid4()), scopes, public=False)
        return self.issue(grant, issuer, new_refresh=True)

    # -- authorize ------------------------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("client_id") != self.client_id:
            return wire.oauth_error(400, "invalid_client", "Unknown client_id.")
        redirect_uri = query.get("redirect_uri", "")
        if not redirect_uri or (self.redirect_uris and redirect_uri not in self.redirect_uris):
            return wire.oauth_error(
                400, "invalid_request", "redirect_uri is missing or not registered."
            )
        state = query.get("state")

        def back(params: dict[str, str]) -> web.Response:
            if state is not None:
                params["state"] = state
            parts = urlsplit(redirect_uri)
            joined = "&".join(p for p in (parts.query, urlencode(params)) if p)
            location = urlunsplit(parts._replace(query=joined))
            return web.Response(status=302, headers={"Location": location})

        if query.get("response_type") != "code":
            return back(
                {
                    "error": "unsupported_response_type",
                    "error_description": "response_type must be code.",
                }
            )
        scopes = tuple(query.get("scope", "").replace("+", " ").split())
        if not scopes or any(scope not in SCOPES for scope in scopes):
            return back(
                {"error": "invalid_scope", "error_description": "Unknown or missing scope."}
            )
        challenge = query.get("code_challenge")
        if challenge is not None and query.get("code_challenge_method", "S256") != "S256":
            return back(
                {"error": "invalid_request", "error_description": "Only S256 is supported."}
            )
        code = secrets.token_urlsafe(24)
        self._codes[code] = AuthCode(redirect_uri, scopes, challenge, self.clock() + self.code_ttl)
        return back({"code": code})

    # -- token ------------------------------------------------------------------------------

    def client_of(self, request: web.Request, params: dict[str, str]) -> tuple[str | None, bool]:
        """(client_id, authenticated) from Basic auth, else the ``client_id`` parameter."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                raw = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return None, False
            client_id, _, secret = raw.partition(":")
            ok = client_id == self.client_id and hmac.compare_digest(secret, self._secret)
            return client_id, ok
        return params.get("client_id"), False

    def _invalid_grant(self, description: str) -> web.Response:
        self.invalid_grant += 1
        return wire.oauth_error(400, "invalid_grant", description)

    def exchange(self, request: web.Request, params: dict[str, str]) -> web.Response:
        """Answer one token request whose parameters have been gathered."""
        client_id, authenticated = self.client_of(request, params)
        basic = request.headers.get("Authorization", "").startswith("Basic ")
        if (basic and not authenticated) or (not basic and client_id != self.client_id):
            return wire.oauth_error(401, "invalid_client", "Client authentication failed.")
        issuer = f"{request.scheme}://{request.host}/oauth2/default"
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            return self._code_grant(params, authenticated, issuer)
        if grant_type == "refresh_token":
            return self._refresh_grant(params, authenticated, issuer)
        return wire.oauth_error(400, "unsupported_grant_type", "grant_type is not supported.")

    def _code_grant(self, params: dict[str, str], authenticated: bool, issuer: str) -> web.Response:
        code = self._codes.pop(params.get("code", ""), None)  # single use
        if code is None or code.expires_at <= self.clock():
            return self._invalid_grant("The authorization code is invalid or expired.")
        if params.get("redirect_uri") != code.redirect_uri:
            return self._invalid_grant("The redirect_uri does not match the authorization request.")
        verifier = params.get("code_verifier")
        if code.challenge is not None:
            if not verifier or not hmac.compare_digest(s256(verifier), code.challenge):
                return self._invalid_grant("PKCE verification failed.")
        elif not authenticated:  # without PKCE only a confidential client may exchange
            return wire.oauth_error(401, "invalid_client", "Client authentication failed.")
        grant = Grant(str(uuid.uuid4()), code.scopes, public=not authenticated)
        return wire.json_response(self.issue(grant, issuer, new_refresh=True))

    def _refresh_grant(
        self, params: dict[str, str], authenticated: bool, issuer: str
    ) -> web.Response:
        found = self._refresh.get(params.get("refresh_token", ""))
        if found is None or found.refresh_expires_at <= self.clock():
            return self._invalid_grant("The refresh token is invalid or expired.")
        if not authenticated and not found.public:
            return wire.oauth_error(401, "invalid_client", "Client authentication failed.")
        return wire.json_response(self.issue(found, issuer, new_refresh=self.rotating))
