"""Counting what clients did, for tests and benchmarks (``GET /__sandbox/stats``).

Requests are counted by ``"METHOD /path-template"`` (e.g. ``"GET /v3/activities/{activity_id}"``)
and final status code, so a test can assert "the client polled at most N times" or
"no request got 429" without parsing logs.

They are also counted per authorization (one consent, or one ``/__sandbox/tokens``;
every access and refresh token issued for it, refreshed or rotated, belongs to it), so a
test that connects its run with tokens of its own can ask what THIS run met while other
clients share the sandbox (``GET /__sandbox/authorization?token=``): its requests by
status (``"reset"`` for those a reset fault cut off), the faults fired on them, and how
many were answered 429 ``throttled``. Tokens are told apart by watching what the token
endpoint and ``/__sandbox/tokens`` answer, nothing else.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from sandbox.faults import HANDLING, NAMES, Handling

CONTROL_PREFIX = "/__sandbox/"
TOKEN_SUFFIX = "/oauth2/default/v1/token"  # noqa: S105 - a path, not a secret
MINT_PATH = "/__sandbox/tokens"


def _template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "<unmatched>"
    return f"{request.method} {template}"


def _document(response: web.StreamResponse) -> dict[str, Any] | None:
    body = getattr(response, "body", None)
    if not isinstance(body, bytes):
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


class Authorization:
    """What the requests made with one authorization's tokens met."""

    def __init__(self, authorization_id: str) -> None:
        self.authorization_id = authorization_id
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.faults: Counter[str] = Counter()
        self.throttled = 0
        self.first_at = 0.0
        self.last_at = 0.0
        """When its first and last request arrived (wall clock; 0: none yet): its span
        within the key's busy span, so a benchmark can tell a starved run."""

    def snapshot(self) -> dict[str, Any]:
        return {
            "authorization": self.authorization_id,
            "requests": {key: dict(codes) for key, codes in sorted(self.requests.items())},
            "faults": {name: self.faults[name] for name in NAMES},
            "throttled": self.throttled,
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


class RequestStats:
    def __init__(self) -> None:
        self.requests: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self.tokens: dict[str, str] = {}
        """Every access and refresh token issued, to its authorization's id."""
        self.authorizations: dict[str, Authorization] = {}

    def record(self, request: web.Request, status: int) -> None:
        self.requests[_template(request)][str(status)] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {key: dict(codes) for key, codes in sorted(self.requests.items())}

    def reset(self) -> None:
        self.requests.clear()
        for authorization_id in self.authorizations:
            self.authorizations[authorization_id] = Authorization(authorization_id)

    def authorization(self, token: str) -> Authorization | None:
        """The authorization an access or refresh token was issued for, if any."""
        found = self.tokens.get(token)
        return None if found is None else self.authorizations[found]

    # -- whose request is it ---------------------------------------------------------------

    async def _authorization_of(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.tokens.get(header[7:].strip())
        if request.method == "POST" and request.path.endswith(TOKEN_SUFFIX):
            refresh = request.query.get("refresh_token")
            if refresh is None and request.content_type == "application/x-www-form-urlencoded":
                refresh = str((await request.post()).get("refresh_token", ""))  # cached
            return self.tokens.get(refresh or "")
        return None

    def _learn(self, response: web.StreamResponse, authorization_id: str | None) -> None:
        """Note the tokens of a token response: a refresh keeps its authorization, a
        consent (code exchange) or a ``/__sandbox/tokens`` starts a new one."""
        if response.status not in (200, 201):
            return
        doc = _document(response)
        if doc is None or not isinstance(doc.get("access_token"), str):
            return
        if authorization_id is None:
            authorization_id = uuid.uuid4().hex
            self.authorizations[authorization_id] = Authorization(authorization_id)
        for key in ("access_token", "refresh_token"):
            token = doc.get(key)
            if isinstance(token, str):
                self.tokens[token] = authorization_id

    def _count(
        self,
        request: web.Request,
        handling: Handling,
        status: str,
        throttled: bool = False,
        arrived: float = 0.0,
    ) -> None:
        if handling.authorization is None:
            return
        seen = self.authorizations[handling.authorization]
        if arrived:
            seen.first_at = seen.first_at or arrived
            seen.last_at = max(seen.last_at, arrived)
        seen.requests[_template(request)][status] += 1
        seen.faults.update(handling.fired)
        seen.throttled += throttled

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            response = await handler(request)
            if request.path == MINT_PATH:
                self._learn(response, None)
            return response
        arrived = time.time()
        handling = Handling(await self._authorization_of(request))
        context = HANDLING.set(handling)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.record(request, exc.status)
            self._count(request, handling, str(exc.status), arrived=arrived)
            raise
        except asyncio.CancelledError:
            if "reset" in handling.fired:  # cut off by a reset fault
                self._count(request, handling, "reset")
            raise
        finally:
            HANDLING.reset(context)
        self.record(request, response.status)
        throttled = False
        if response.status == 429:
            doc = _document(response)
            throttled = doc is not None and doc.get("error_key") == "throttled"
        self._count(request, handling, str(response.status), throttled, arrived)
        if request.path.endswith(TOKEN_SUFFIX):
            self._learn(response, handling.authorization)
        return response
