"""Finding a list's members in bulk, and deciding who leaves it.

The sandbox's contact export carries ``contact_id`` when asked; whether the real one
does is not documented, so a small server on 127.0.0.1 answers as an account whose
export has no such column: the members must then be paged (500 a request), never
looked up one email at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest
from aiohttp import web

from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.pacing import Pacer
from shared.constant_contact.transport import TokenProvider
from shared.exports.state import email_keys, union
from shared.runs.mirror import Members, list_members, next_managed, plan_list, read_plan, write_plan
from tests.support.ctct_support import FAST
from tests.support.sandbox_service import RunningSandbox

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def contact(n: int) -> dict[str, object]:
    return {"contact_id": f"id-{n}", "email_address": {"address": f"M{n}@Example.com"}}


SEEN = web.AppKey("seen", list[str])


async def no_contact_ids_account() -> web.Application:
    app = web.Application()
    seen: list[str] = []
    app[SEEN] = seen

    async def export(request: web.Request) -> web.Response:
        seen.append("export")
        return web.json_response({"activity_id": "exp-1", "state": "initialized"}, status=201)

    async def activity(request: web.Request) -> web.Response:
        links = {"results": {"href": "/v3/contact_exports/exp-1"}}
        return web.json_response({"activity_id": "exp-1", "state": "completed", "_links": links})

    async def file(request: web.Request) -> web.Response:
        rows = "".join(f"M{n}@example.com,First\r\n" for n in range(3))
        return web.Response(text="email_address,first_name\r\n" + rows, content_type="text/csv")

    async def contacts(request: web.Request) -> web.Response:
        seen.append(f"contacts?{request.query_string}")
        if request.query.get("cursor") == "2":
            return web.json_response({"contacts": [contact(2)]})
        assert request.query["lists"] == LIST_ID
        page = {"contacts": [contact(0), contact(1)]}
        return web.json_response({**page, "_links": {"next": {"href": "/v3/contacts?cursor=2"}}})

    app.router.add_post("/v3/activities/contact_exports", export)
    app.router.add_get("/v3/activities/exp-1", activity)
    app.router.add_get("/v3/contact_exports/exp-1", file)
    app.router.add_get("/v3/contacts", contacts)
    return app


@pytest.fixture
async def account() -> AsyncIterator[tuple[str, list[str]]]:
    app = await no_contact_ids_account()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v3", app[SEEN]
    finally:
        await runner.cleanup()


async def token(_refresh: bool) -> str:
    return "token"


async def test_without_contact_ids_in_the_export_the_members_are_paged(
    account: tuple[str, list[str]],
) -> None:
    base, seen = account
    async with ConstantContactClient(base, token, Pacer(100), retry=FAST) as client:
        members = await list_members(client, LIST_ID, poll_interval=0.01)

    assert members.via == "paging"
    assert members.contact_ids == ["id-0", "id-1", "id-2"]
    expected = email_keys([f"m{n}@example.com" for n in range(3)])  # normalised
    assert members.keys.tolist() == expected.tolist()
    assert seen == ["export", f"contacts?lists={LIST_ID}&limit=500", "contacts?cursor=2"]


async def test_the_sandbox_export_gives_contact_ids_in_one_file(sandbox: RunningSandbox) -> None:
    list_id = sandbox.create_list()
    async with ConstantContactClient(
        sandbox.api_base, token_for(sandbox), Pacer(100), retry=FAST
    ) as client:
        people = [{"email": "a@example.com"}, {"email": "B@example.com"}]
        started = await client.import_json(
            orjson.dumps({"import_data": people, "list_ids": [list_id]})
        )
        await client.wait_for(started.activity_id, poll_interval=0.02)
        members = await list_members(client, list_id, poll_interval=0.02)

    assert members.via == "contact_export"
    assert sorted(members.keys.tolist()) == sorted(
        email_keys(["a@example.com", "b@example.com"]).tolist()
    )
    assert len(set(members.contact_ids)) == 2
    assert members.requests <= 4  # start, poll(s), download: whatever the list's size


def token_for(sandbox: RunningSandbox) -> TokenProvider:
    value = sandbox.access_token()

    async def provide(_refresh: bool) -> str:
        return value

    return provide


def keys_of(*emails: str) -> np.ndarray:
    return union(email_keys(emails))


def test_the_plan_removes_only_this_exports_leavers_that_nobody_else_sends() -> None:
    members = Members(
        keys=email_keys(["stay@x.io", "left@x.io", "hand@x.io", "shared@x.io", "pre@x.io"]),
        contact_ids=["c-stay", "c-left", "c-hand", "c-shared", "c-pre"],
        requests=3,
        via="contact_export",
    )

    changes = plan_list(
        LIST_ID,
        members,
        segment=keys_of("stay@x.io", "pre@x.io", "new@x.io"),
        previous=keys_of("stay@x.io", "left@x.io", "shared@x.io", "gone@x.io"),
        managed=keys_of("stay@x.io", "left@x.io", "shared@x.io", "gone@x.io"),
        claimed=keys_of("shared@x.io"),
    )

    assert changes.remove_ids == ["c-left"]  # not the hand-added, not the shared one
    assert (changes.plan.members, changes.plan.remove, changes.plan.kept_for_others) == (5, 1, 1)
    assert changes.gone.tolist() == keys_of("gone@x.io").tolist()  # left the list already
    # pre@x.io joined the segment but was on the list before: not this export's
    assert changes.added.tolist() == keys_of("new@x.io").tolist()

    staged = read_plan(write_plan([changes]))
    managed = next_managed(
        {LIST_ID: keys_of("stay@x.io", "left@x.io", "shared@x.io", "gone@x.io")},
        [LIST_ID],
        staged,
        removed=True,
    )
    expected = keys_of("stay@x.io", "shared@x.io", "new@x.io")
    assert managed[LIST_ID].tolist() == expected.tolist()
    kept = next_managed({LIST_ID: keys_of("left@x.io")}, [LIST_ID], staged, removed=False)
    assert keys_of("left@x.io").tolist()[0] in kept[LIST_ID].tolist()  # removal not done
