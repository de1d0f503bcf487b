"""A few raw HTTP calls against the sandbox for its own tests (no product client code).

The sandbox tests speak HTTP directly with aiohttp so that they check the wire: the
status, the exact body, the headers. ``Api`` is only a shorthand for those calls.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tests.support.sandbox_service import RunningSandbox


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Api:
    session: aiohttp.ClientSession
    base: str  # e.g. http://127.0.0.1:P/v3 (or Prism's base in front of it)
    token: str | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**headers, **(extra or {})}

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        url = path if path.startswith("http") else f"{self.base}{path}"
        body = orjson.dumps(json) if json is not None else data
        extra = {"Content-Type": "application/json"} if json is not None else {}
        async with self.session.request(
            method, url, data=body, headers=self._headers({**extra, **(headers or {})})
        ) as response:
            raw = await response.read()
            if response.content_type == "application/json" and raw:
                parsed: Any = orjson.loads(raw)
            else:
                parsed = raw.decode(errors="replace")
            return Reply(response.status, parsed, dict(response.headers))

    async def get(self, path: str) -> Reply:
        return await self.call("GET", path)

    async def post(self, path: str, json: Any) -> Reply:
        return await self.call("POST", path, json=json)

    async def wait_activity(self, activity_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """Poll until the activity is in a terminal state; return its last document."""
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.get(f"/activities/{activity_id}")
            assert reply.status == 200, reply.body
            if reply.body["state"] in {"completed", "failed", "timed_out", "cancelled"}:
                return dict(reply.body)
            if time.monotonic() > deadline:
                raise AssertionError(f"activity still {reply.body['state']} after {timeout} s")
            await asyncio.sleep(0.02)

    async def import_json(
        self, list_ids: list[str], contacts: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Import and wait for completion; returns the final activity document."""
        reply = await self.post(
            "/activities/contacts_json_import", {"import_data": contacts, "list_ids": list_ids}
        )
        assert reply.status == 201, reply.body
        return await self.wait_activity(reply.body["activity_id"])


def api_for(
    sandbox: RunningSandbox, session: aiohttp.ClientSession, token: str | None = None
) -> Api:
    return Api(session, sandbox.api_base, token if token is not None else sandbox.access_token())


def people(count: int, start: int = 0, domain: str = "example.com") -> list[dict[str, Any]]:
    return [
        {"email": f"person{i}@{domain}", "first_name": f"First{i}", "last_name": "Last"}
        for i in range(start, start + count)
    ]
