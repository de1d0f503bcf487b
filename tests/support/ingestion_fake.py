"""A local stand-in for Application Insights' ingestion endpoint (``/v2.1/track``).

The Azure Monitor exporter posts its envelopes (JSON, possibly gzipped) to the
``IngestionEndpoint`` of the connection string; pointed here, on 127.0.0.1, it hands
them to a test instead of to Azure. Nothing else of the service is imitated: every
batch is accepted whole.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from types import TracebackType
from typing import Any

from aiohttp import web

INSTRUMENTATION_KEY = "00000000-0000-4000-8000-0000000c0ffe"


class IngestionFake:
    """Collects every envelope posted to it; run it with ``with``."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.others: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._lock = threading.Lock()

    @property
    def connection_string(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return (
            f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={base};LiveEndpoint={base}"
        )

    async def _track(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        items = json.loads(raw)
        items = items if isinstance(items, list) else [items]
        with self._lock:
            self.bodies.append(raw)
            self.envelopes.extend(items)
        return web.json_response(
            {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}
        )

    async def _other(self, request: web.Request) -> web.Response:
        """Anything else the exporter asks for is recorded, and not found."""
        with self._lock:
            self.others.append(f"{request.method} {request.path}")
        return web.Response(status=404)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2.1/track", self._track)
        app.router.add_post("/v2/track", self._track)
        app.router.add_route("*", "/{anything:.*}", self._other)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def __enter__(self) -> IngestionFake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
