"""Counting what clients did, for tests and benchmarks (``GET /__sandbox/stats``).

Requests are counted by ``"METHOD /path-template"`` (e.g. ``"GET /v3/activities/{activity_id}"``)
and final status code, so a test can assert "the client polled at most N times" or
"no request got 429" without parsing logs.
"""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web
from aiohttp.typedefs import Handler

CONTROL_PREFIX = "/__sandbox/"


class RequestStats:
    def __init__(self) -> None:
        self.requests: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )

    def record(self, request: web.Request, status: int) -> None:
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else "<unmatched>"
        self.requests[f"{request.method} {template}"][str(status)] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {key: dict(codes) for key, codes in sorted(self.requests.items())}

    def reset(self) -> None:
        self.requests.clear()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.record(request, exc.status)
            raise
        self.record(request, response.status)
        return response
