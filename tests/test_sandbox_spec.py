"""Every kind of response the sandbox gives, checked against the project's contract by Prism.

Prism (npm @stoplight/prism-cli, pinned in package.json) runs as a validating proxy in
front of the sandbox, reading contract/constant-contact-v3.yaml: ccexport's own
OpenAPI document of the Constant Contact V3 API, written from the official spec's
facts (contract/README.md). It forwards each call and reports what does not match the
document in an ``sl-violations`` header; every test here fails on any violation,
request or response, error or warning.

The one exception is a test that sends an invalid request on purpose to get a 400 or
415 (``bad_request=True``): the request-side findings are then expected. The official
spec's bugs (``maxItems: 0`` on ``remove_list_memberships``, ``include``/``status``
declared as plain enums, 429 missing on read endpoints) are not in the contract, so
nothing here works around them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sandbox import wire
from tests.sandbox_api import Api, Reply, people
from tests.sandbox_service import RunningSandbox, running_prism, running_sandbox
from tests.services import ServiceError

MISSING_ID = "0c6b3b4e-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[RunningSandbox, str]]:
    """A sandbox with Prism in front of it; yields (sandbox, Prism base URL)."""
    flags = {
        "rate_limit": 0,
        "daily_quota": 0,
        "token_rate_limit": 0,
        "activity_delay": 0.2,
        "import_rate": 5000,
    }
    try:
        with running_sandbox(**flags) as sandbox, running_prism(sandbox.api_base) as prism:
            yield sandbox, prism
    except ServiceError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def sandbox(stack: tuple[RunningSandbox, str]) -> RunningSandbox:
    return stack[0]


@pytest.fixture
async def api(stack: tuple[RunningSandbox, str]) -> AsyncIterator[Api]:
    sandbox, prism = stack
    async with aiohttp.ClientSession() as session:
        yield Api(session, prism, sandbox.access_token())


def violations(reply: Reply) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(reply.headers.get("sl-violations", "[]"))
    return found


def assert_valid(reply: Reply, *, bad_request: bool = False) -> None:
    """No violation of the contract, in the request or in the response.

    ``bad_request``: the test sent an invalid request on purpose (to get a 400 or 415),
    so request-side findings are expected; the response must still match.
    """
    for violation in violations(reply):
        if bad_request and violation["location"][0] == "request":
            continue
        raise AssertionError(
            f"spec violation {violation} for status {reply.status}: {reply.body!r:.300}"
        )


async def checked(
    api: Api, method: str, path: str, json_body: Any = None, *, bad_request: bool = False
) -> Reply:
    reply = await api.call(method, path, json=json_body)
    assert_valid(reply, bad_request=bad_request)
    return reply


async def test_prism_is_really_validating(api: Api, sandbox: RunningSandbox) -> None:
    """A request that breaks the spec is reported: the validator is live, not a pass-through."""
    reply = await api.post(
        "/activities/contacts_json_import",
        {"import_data": [{"email": "a@example.com"}], "list_ids": ["nope"]},
    )
    messages = [v["message"] for v in violations(reply)]
    assert any("list_ids.0" in message and "uuid" in message for message in messages), messages
    assert reply.status == 400  # and the sandbox itself refused it


async def test_prism_reports_an_invalid_response(unused_tcp_port: int) -> None:
    """Response validation is live too: a body built like the sandbox's, but wrong, is caught."""

    async def wrong(_request: web.Request) -> web.Response:
        return wire.json_response(
            {"activity_id": 123, "percent_done": "half", "created_at": "yesterday"}
        )

    app = web.Application()
    app.router.add_get("/v3/activities/{activity_id}", wrong)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        with running_prism(f"http://127.0.0.1:{unused_tcp_port}/v3") as prism:
            async with aiohttp.ClientSession() as session:
                reply = await Api(session, prism, "any-token").get(f"/activities/{MISSING_ID}")
    finally:
        await runner.cleanup()
    found = {tuple(v["location"]) for v in violations(reply)}
    assert ("response", "body", "activity_id") in found
    assert ("response", "body", "percent_done") in found
    assert ("response", "body", "created_at") in found


async def test_lists(api: Api) -> None:
    created = await checked(
        api, "POST", "/contact_lists", {"name": "Spec list", "favorite": True, "description": "d"}
    )
    assert created.status == 201
    list_id = created.body["list_id"]
    await checked(api, "POST", "/contact_lists", {"name": "Spec list 2"})
    duplicate = await checked(api, "POST", "/contact_lists", {"name": "Spec list"})
    assert duplicate.status == 409
    page = await checked(
        api, "GET", "/contact_lists?limit=1&include_count=true&include_membership_count=all"
    )
    assert page.body["_links"]["next"]["href"]
    await checked(api, "GET", page.body["_links"]["next"]["href"].removeprefix("/v3"))
    one = await checked(api, "GET", f"/contact_lists/{list_id}?include_membership_count=active")
    assert one.status == 200
    missing = await checked(api, "GET", f"/contact_lists/{MISSING_ID}")
    assert missing.status == 404


async def test_import_activity_in_every_state(api: Api, sandbox: RunningSandbox) -> None:
    list_id = sandbox.create_list()
    contacts = [*people(1000), {"email": "broken"}, {"first_name": "nobody"}]
    created = await checked(
        api,
        "POST",
        "/activities/contacts_json_import",
        {"import_data": contacts, "list_ids": [list_id]},
    )
    assert created.status == 201
    states = {created.body["state"]}  # "initialized", already checked by Prism
    while True:
        doc = await checked(api, "GET", f"/activities/{created.body['activity_id']}")
        states.add(doc.body["state"])
        if doc.body["state"] == "completed":
            break
        await asyncio.sleep(0.02)
    assert states == {"initialized", "processing", "completed"}
    listing = await checked(api, "GET", "/activities?state=completed&limit=1")
    assert listing.status == 200
    await checked(api, "GET", "/activities?limit=500")
    assert (await checked(api, "GET", f"/activities/{MISSING_ID}")).status == 404


async def test_csv_import(api: Api, sandbox: RunningSandbox) -> None:
    list_id = sandbox.create_list()
    form = aiohttp.FormData()
    form.add_field(
        "file", b"email,first_name\nc1@example.com,C\n", filename="c.csv", content_type="text/csv"
    )
    form.add_field("list_ids", list_id)
    reply = await api.call("POST", "/activities/contacts_file_import", data=form)
    assert_valid(reply)
    assert reply.status == 201
    done = await api.wait_activity(reply.body["activity_id"])
    assert done["source_file_name"] == "c.csv"
    assert_valid(await api.get(f"/activities/{reply.body['activity_id']}"))


async def test_contacts_and_memberships(api: Api, sandbox: RunningSandbox) -> None:
    source, target = sandbox.create_list(), sandbox.create_list()
    rich = {
        "email": "rich@example.com", "first_name": "R", "last_name": "Ich", "job_title": "CEO",
        "company_name": "Co", "birthday_month": 3, "birthday_day": 9, "anniversary": "2020-01-02",
        "phone": "555-0100", "work_phone": "555-0101", "street": "1 Main St", "street2": "Apt 2",
        "city": "Town", "state": "MA", "zip": "01101", "country": "US", "work_city": "City",
        "cf:tier": "gold",
    }  # fmt: skip
    await api.import_json([source], [rich, *people(5, domain="spec.example.com")])
    sandbox.unsubscribe(["person1@spec.example.com"])
    include = "custom_fields,list_memberships,phone_numbers,street_addresses,taggings,notes"
    page = await checked(
        api, "GET", f"/contacts?lists={source}&limit=2&include={include}&include_count=true"
    )
    assert page.body["contacts_count"] == 5
    second = await checked(api, "GET", page.body["_links"]["next"]["href"].removeprefix("/v3"))
    assert second.status == 200
    gone = await checked(
        api,
        "GET",
        f"/contacts?email=person1@spec.example.com&status=unsubscribed&include={include}",
    )
    assert gone.body["contacts"][0]["email_address"]["permission_to_send"] == "unsubscribed"
    await checked(api, "GET", f"/contacts?status=all&include={include}&limit=500")
    one = await checked(api, "GET", "/contacts?email=rich@example.com")
    contact_id = one.body["contacts"][0]["contact_id"]
    await checked(api, "GET", f"/contacts/{contact_id}?include={include}")
    assert (await checked(api, "GET", f"/contacts/{MISSING_ID}")).status == 404
    ids = [c["contact_id"] for c in page.body["contacts"]]
    added = await checked(
        api,
        "POST",
        "/activities/add_list_memberships",
        {"source": {"contact_ids": ids}, "list_ids": [target]},
    )
    assert added.status == 201
    await api.wait_activity(added.body["activity_id"])
    assert_valid(await api.get(f"/activities/{added.body['activity_id']}"))
    removed = await checked(
        api,
        "POST",
        "/activities/remove_list_memberships",
        {"source": {"contact_ids": ids}, "list_ids": [target]},
    )
    assert removed.status == 201
    await api.wait_activity(removed.body["activity_id"])
    assert_valid(await api.get(f"/activities/{removed.body['activity_id']}"))


async def test_export_activity_and_file(api: Api, sandbox: RunningSandbox) -> None:
    list_id = sandbox.create_list()
    await api.import_json([list_id], people(7, domain="export.example.com"))
    created = await checked(api, "POST", "/activities/contact_exports", {"list_ids": [list_id]})
    assert created.status == 201
    await api.wait_activity(created.body["activity_id"])
    done = await checked(api, "GET", f"/activities/{created.body['activity_id']}")
    href = done.body["_links"]["results"]["href"]
    csv_file = await checked(api, "GET", href.removeprefix("/v3"))
    assert csv_file.status == 200
    assert len(csv_file.body.splitlines()) == 8


async def test_error_responses(api: Api, sandbox: RunningSandbox) -> None:
    list_id = sandbox.create_list()
    bad = await checked(
        api,
        "POST",
        "/activities/contacts_json_import",
        {"import_data": [{"email": 5}], "list_ids": [list_id]},
        bad_request=True,
    )
    assert bad.status == 400
    expired = Api(api.session, api.base, "not-a-token")
    assert (await checked(expired, "GET", "/contact_lists")).status == 401
    assert (await checked(api, "GET", "/contacts?limit=9999", bad_request=True)).status == 400
    no_scope = Api(api.session, api.base, str(sandbox.tokens(scope="account_read")["access_token"]))
    assert (await checked(no_scope, "GET", "/contact_lists")).status == 403
    not_multipart = await api.call(
        "POST",
        "/activities/contacts_file_import",
        data=b"email\n",
        headers={"Content-Type": "text/csv"},
    )
    assert not_multipart.status == 415
    assert_valid(not_multipart, bad_request=True)
    sandbox.faults(http_500={"rate": 1, "count": 1}, http_503={"rate": 1, "count": 1})
    assert (await checked(api, "GET", "/contacts")).status == 503
    assert (await checked(api, "GET", "/contacts")).status == 500
    sandbox.faults(import_failed={"rate": 1, "count": 1})
    failed = await checked(
        api,
        "POST",
        "/activities/contacts_json_import",
        {"import_data": people(2), "list_ids": [list_id]},
    )
    await api.wait_activity(failed.body["activity_id"])
    state = await checked(api, "GET", f"/activities/{failed.body['activity_id']}")
    assert state.body["state"] == "failed"


async def test_429_bodies(api: Api, sandbox: RunningSandbox) -> None:
    list_id = sandbox.create_list()
    body = {"import_data": people(1), "list_ids": [list_id]}
    try:
        sandbox.settings(requests_per_second=1)
        await asyncio.sleep(1.0)
        replies = [await api.post("/activities/contacts_json_import", body) for _ in range(2)]
        assert [r.status for r in replies] == [201, 429]
        assert_valid(replies[1])
        reads = [await api.get("/contacts") for _ in range(2)]
        assert reads[1].status == 429
        assert_valid(reads[1])  # the contract declares 429 on reads too
        sandbox.settings(requests_per_second=0, daily_quota=1)
        sandbox.reset_usage()
        await api.get("/contact_lists")
        over = await api.post("/activities/contacts_json_import", body)
        assert over.body == {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}
        assert_valid(over)
    finally:
        sandbox.settings(requests_per_second=0, daily_quota=0)
