"""The client follows ``_links`` hrefs only inside the API: a hostile href (another host,
absolute, ``//host``, a relative ``@host/x``, a path out of the base) gets a clear
RemoteError and no request at all, so the bearer token never leaves the API.

Two small servers on 127.0.0.1: the API, whose pages and export activity answer with
the href under test, and another host that counts every request it receives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.pacing import Pacer
from shared.errors import RemoteError
from tests.support.ctct_support import FAST

TOKEN = "secret-access-token"
LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


@dataclass
class Servers:
    api_port: int
    other_port: int
    href: str = ""
    api_seen: list[str] = field(default_factory=list)
    other_seen: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v3"


async def _start(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    state = Servers(0, 0)

    async def api(request: web.Request) -> web.Response:
        state.api_seen.append(request.path_qs)
        if request.path == "/v3/contact_lists" and "cursor" not in request.query:
            return web.json_response({"lists": [], "_links": {"next": {"href": state.href}}})
        if request.path == "/v3/contact_lists":
            return web.json_response({"lists": []})  # the last page
        if request.path == "/v3/activities/contact_exports":
            return web.json_response({"activity_id": "a1", "state": "initialized"})
        if request.path == "/v3/activities/a1":
            links = {"results": {"href": state.href}}
            return web.json_response({"activity_id": "a1", "state": "completed", "_links": links})
        if request.path == "/v3/contact_exports/f1":
            return web.Response(text="email\n", content_type="text/csv")
        return web.json_response([{"error_key": "not_found"}], status=404)

    async def other(request: web.Request) -> web.Response:
        state.other_seen.append((request.path_qs, request.headers.get("Authorization")))
        return web.json_response({"lists": []})

    api_app, other_app = web.Application(), web.Application()
    api_app.router.add_route("*", "/{tail:.*}", api)
    other_app.router.add_route("*", "/{tail:.*}", other)
    api_runner, state.api_port = await _start(api_app)
    other_runner, state.other_port = await _start(other_app)
    try:
        yield state
    finally:
        await api_runner.cleanup()
        await other_runner.cleanup()


async def _token(force_refresh: bool = False) -> str:
    return TOKEN


def _client(servers: Servers) -> ConstantContactClient:
    return ConstantContactClient(servers.api_base, _token, Pacer(200), retry=FAST)


def _hostile(servers: Servers) -> list[str]:
    other = f"127.0.0.1:{servers.other_port}"
    return [
        f"@{other}/v3/contact_lists?cursor=c2",  # pasted after the origin: another host
        f"http://{other}/v3/contact_lists?cursor=c2",
        f"//{other}/v3/contact_lists?cursor=c2",
        f"http://127.0.0.1:{servers.api_port}@{other}/v3/contact_lists?cursor=c2",
        f"https://127.0.0.1:{servers.api_port}/v3/contact_lists?cursor=c2",  # other scheme
        "/elsewhere/contact_lists?cursor=c2",  # out of the base path
        "/v3/../elsewhere?cursor=c2",
        "/v3/%2e%2e/elsewhere?cursor=c2",
        "/v3x/contact_lists?cursor=c2",
    ]


async def test_a_next_link_to_another_host_is_refused_before_any_request(
    servers: Servers,
) -> None:
    for href in _hostile(servers):
        servers.href = href
        servers.api_seen.clear()
        async with _client(servers) as client:
            with pytest.raises(RemoteError) as caught:
                await client.lists()
        assert str(caught.value) == (
            "GET /contact_lists: Constant Contact answered with a link outside its API "
            f"({servers.api_base}); it was not followed and nothing was sent to it"
        ), href
        assert "c2" not in str(caught.value)
        assert servers.api_seen == ["/v3/contact_lists?limit=500"], href
    assert servers.other_seen == []


async def test_an_export_file_link_to_another_host_is_refused(servers: Servers) -> None:
    for href in _hostile(servers):
        servers.href = href.replace("contact_lists", "contact_exports")
        async with _client(servers) as client:
            with pytest.raises(RemoteError, match="link outside its API"):
                await client.export_contacts([LIST_ID], poll_interval=0.01, timeout=5)
    assert servers.other_seen == []


async def test_links_inside_the_api_are_followed_exactly(servers: Servers) -> None:
    servers.href = "/v3/contact_lists?cursor=bGltaXQ9MSZuZXh0PTI%3D"
    async with _client(servers) as client:
        assert await client.lists() == []
        assert servers.api_seen[-1] == servers.href
        servers.href = f"http://127.0.0.1:{servers.api_port}/v3/contact_exports/f1"
        assert await client.export_contacts([LIST_ID], poll_interval=0.01) == b"email\n"
    assert servers.other_seen == []
