"""The sandbox app built in-process with ``create_app`` and served by aiohttp's test server."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from sandbox.app import create_app
from sandbox.config import SandboxConfig


async def test_create_app_serves_the_same_api_in_process() -> None:
    config = SandboxConfig(requests_per_second=0, activity_delay=0, client_id="in-process")
    async with TestClient(TestServer(create_app(config), host="127.0.0.1")) as client:
        token = (await (await client.post("/__sandbox/tokens", json={})).json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        created = await client.post("/v3/contact_lists", json={"name": "in-process"}, headers=auth)
        list_id = (await created.json())["list_id"]
        body = {"import_data": [{"email": "a@example.com"}], "list_ids": [list_id]}
        activity = await (
            await client.post("/v3/activities/contacts_json_import", json=body, headers=auth)
        ).json()
        state = ""
        for _ in range(200):
            state = (
                await (
                    await client.get(f"/v3/activities/{activity['activity_id']}", headers=auth)
                ).json()
            )["state"]
            if state == "completed":
                break
            await asyncio.sleep(0.01)
        assert state == "completed"
        members = await (await client.get(f"/__sandbox/lists/{list_id}/members")).json()
        assert members == {"list_id": list_id, "emails": ["a@example.com"]}
        stats = await (await client.get("/__sandbox/stats")).json()
        assert stats["daily_used"] == {
            "in-process": stats["requests"]["GET /v3/activities/{activity_id}"]["200"] + 2
        }
