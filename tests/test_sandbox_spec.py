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
import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web
from yarl import URL

from sandbox import wire
from sandbox.oauth import s256
from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.oauth import OAuthClient
from shared.constant_contact.pacing import Pacer
from tests.support.ctct_support import FAST, SandboxTokens
from tests.support.sandbox_api import Api, Reply, people
from tests.support.sandbox_service import RunningSandbox, running_prism, running_sandbox
from tests.support.services import ServiceError

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


@pytest.fixture(scope="module")
def auth_prism(stack: tuple[RunningSandbox, str]) -> Iterator[str]:
    """A second Prism, in front of the sandbox's authorization server (``/token``)."""
    try:
        with running_prism(stack[0].auth_base) as prism:
            yield prism
    except ServiceError as exc:
        pytest.fail(str(exc))


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
            {
                "activity_id": 123,
                "state": "initialized",
                "percent_done": "half",
                "created_at": "yesterday",
                "percent_complete": 50,  # not in the contract: response objects are closed
            }
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
    codes = {v.get("code") for v in violations(reply)}
    assert "additionalProperties" in codes, violations(reply)


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
    several = await checked(api, "GET", "/contact_lists?status=active,deleted&limit=1000")
    assert list_id in {lst["list_id"] for lst in several.body["lists"]}
    deleted = await checked(api, "GET", "/contact_lists?status=deleted")
    assert deleted.body["lists"] == []
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
    sandbox.define_custom_fields("tier")
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
    full = await checked(api, "GET", f"/contacts/{contact_id}?include={include}")
    assert [field["value"] for field in full.body["custom_fields"]] == ["gold"]
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


async def test_token_endpoint(auth_prism: str, sandbox: RunningSandbox) -> None:
    """``/token`` through Prism: a code exchange (form body, as the client sends it), a
    refresh (query string, as the developer guide shows it) and each error it answers.

    ``/authorize`` is called directly: its answer is a redirect, which Prism's proxy
    would follow instead of checking (the contract's description says so).
    """
    verifier = secrets.token_urlsafe(48)
    redirect = "http://127.0.0.1:9/callback"
    credentials = f"{sandbox.client_id}:{sandbox.client_secret}".encode()
    basic = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
    async with aiohttp.ClientSession() as session:
        consent = {
            "client_id": sandbox.client_id, "redirect_uri": redirect, "response_type": "code",
            "scope": "contact_data offline_access", "state": "s", "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }  # fmt: skip
        async with session.get(
            sandbox.authorize_url, params=consent, allow_redirects=False
        ) as response:
            assert response.status == 302
            code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]

        async def token(
            form: dict[str, str] | None = None,
            query: dict[str, str] | None = None,
            headers: dict[str, str] = basic,
            bad_request: bool = False,
        ) -> Reply:
            async with session.post(
                f"{auth_prism}/token", data=form, params=query, headers=headers
            ) as response:
                body = await response.json(content_type=None)
                reply = Reply(response.status, body, dict(response.headers))
            assert_valid(reply, bad_request=bad_request)
            return reply

        exchange = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "code_verifier": verifier,
        }
        issued = await token(exchange)
        assert issued.status == 200
        refresh = {"grant_type": "refresh_token", "refresh_token": issued.body["refresh_token"]}
        assert (await token(query=refresh)).status == 200
        used = await token(exchange)  # codes are single-use
        assert (used.status, used.body["error"]) == (400, "invalid_grant")
        wrong = base64.b64encode(f"{sandbox.client_id}:wrong".encode()).decode()
        refused = await token(refresh, headers={"Authorization": f"Basic {wrong}"})
        assert (refused.status, refused.body["error"]) == (401, "invalid_client")
        odd = await token({"grant_type": "password"}, bad_request=True)
        assert (odd.status, odd.body["error"]) == (400, "unsupported_grant_type")
        try:
            sandbox.settings(token_requests_per_second=1)
            sandbox.reset_usage()
            replies = [await token(refresh) for _ in range(2)]
            assert [r.status for r in replies] == [200, 429]
        finally:
            sandbox.settings(token_requests_per_second=0)
        sandbox.faults(token_error={"rate": 1, "count": 1, "status": 503})
        unavailable = await token(refresh)
        assert (unavailable.status, unavailable.body["error"]) == (503, "temporarily_unavailable")


async def _relay(
    upstreams: dict[str, str], port: int, found: list[dict[str, Any]]
) -> web.AppRunner:
    """``http://127.0.0.1:port/<prefix>/...`` -> ``upstreams[prefix]/...``, collecting every
    violation Prism reports. The client follows ``_links`` hrefs that start with ``/v3``
    as given, and Prism serves the contract's paths at its root: this joins the two."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def relay(request: web.Request) -> web.Response:
        target = f"{upstreams[request.match_info['prefix']]}/{request.match_info['tail']}"
        if request.query_string:
            target += f"?{request.query_string}"
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() in ("authorization", "content-type", "accept")
        }
        async with session.request(
            request.method, URL(target, encoded=True), data=await request.read(), headers=headers
        ) as response:
            found.extend(json.loads(response.headers.get("sl-violations", "[]")))
            return web.Response(
                status=response.status,
                body=await response.read(),
                headers={"Content-Type": response.headers.get("Content-Type", "text/plain")},
            )

    async def close(_app: web.Application) -> None:
        await session.close()

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{prefix}/{tail:.*}", relay)
    app.on_cleanup.append(close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_the_client_speaks_the_contract(
    stack: tuple[RunningSandbox, str], auth_prism: str, unused_tcp_port: int
) -> None:
    """ccexport's own client, every call it makes, through Prism: no violation, in what it
    sends or in what it reads (cursor pages and the export file link included)."""
    sandbox, prism = stack
    found: list[dict[str, Any]] = []
    runner = await _relay({"v3": prism, "oauth": auth_prism}, unused_tcp_port, found)
    base = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        async with ConstantContactClient(
            f"{base}/v3", SandboxTokens(sandbox), Pacer(200), retry=FAST
        ) as client:
            made = await client.create_list(f"Client list {secrets.token_hex(4)}")
            assert (await client.get_list(made.list_id)).name == made.name
            again, created = await client.create_or_find_list(made.name)  # 409, then the list
            assert (again.list_id, created) == (made.list_id, False)
            field = await client.create_custom_field(f"Client field {secrets.token_hex(3)}")
            assert field.custom_field_id in {
                f.custom_field_id for f in await client.custom_fields()
            }
            other = sandbox.create_list()
            assert await client.check_lists([made.list_id, other]) == []
            domain = f"{made.list_id[:8]}.example.com"
            contacts = people(600, 0, domain)
            body = orjson.dumps({"import_data": contacts, "list_ids": [made.list_id]})
            started = [
                await client.import_json(body),
                await client.import_csv(
                    f"email,first_name\nextra@{domain},X\n".encode(), [made.list_id, other]
                ),
            ]
            polled = await client.poll_imports(a.activity_id for a in started)
            assert set(polled) == {a.activity_id for a in started}
            for activity in started:
                assert (await client.wait_for(activity.activity_id, poll_interval=0.05)).done
            members = [c async for c in client.contacts_by_list(made.list_id)]  # two pages
            assert len(members) == 601
            assert await client.contact_by_email(f"person7@{domain}") is not None
            ids = [c.contact_id for c in members[:3]]
            changes = [
                *await client.add_list_memberships(ids, [other]),
                *await client.remove_list_memberships(ids, [other]),
            ]
            for activity in changes:
                await client.wait_for(activity.activity_id, poll_interval=0.05)
            exported = await client.export_contacts([made.list_id], poll_interval=0.05)
            assert len(exported.splitlines()) == 602
            assert await client.list_activities(state="completed")

        verifier = secrets.token_urlsafe(48)
        redirect = "http://127.0.0.1:9/callback"
        oauth = OAuthClient(
            f"{base}/oauth", sandbox.client_id, sandbox.client_secret, pacer=Pacer(100)
        )
        consent = URL(oauth.authorize_url(redirect, "st", s256(verifier))).query
        async with (
            aiohttp.ClientSession() as session,
            session.get(sandbox.authorize_url, params=consent, allow_redirects=False) as answer,
        ):
            code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
        bundle = await oauth.exchange_code(code, redirect, verifier)
        assert bundle.refresh_token is not None
        assert (await oauth.refresh(bundle.refresh_token)).access_token
    finally:
        await runner.cleanup()
    assert found == []


async def test_account_summary(api: Api, sandbox: RunningSandbox) -> None:
    """``GET /account/summary`` takes ``account_read`` (a ``contact_data`` token gets 403),
    and the client reads the organization's name from it."""
    token = str(sandbox.tokens(scope="contact_data account_read")["access_token"])
    summary = await checked(Api(api.session, api.base, token), "GET", "/account/summary")
    assert summary.status == 200
    assert summary.body["organization_name"] == "Northwind Traders (sandbox)"
    assert (await checked(api, "GET", "/account/summary")).status == 403

    async def granted(_force_refresh: bool = False) -> str:
        return token

    async with ConstantContactClient(api.base, granted, Pacer(200), retry=FAST) as client:
        assert await client.organization_name() == "Northwind Traders (sandbox)"


# --- custom fields ------------------------------------------------------------------------


async def test_custom_fields_create_and_get(api: Api) -> None:
    label = f"Spec field {secrets.token_hex(3)}"
    created = await checked(api, "POST", "/contact_custom_fields", {"label": label, "type": "date"})
    assert created.status == 201
    assert created.body["name"] == label.replace(" ", "_")
    field_id = created.body["custom_field_id"]
    duplicate = await checked(
        api, "POST", "/contact_custom_fields", {"label": label, "type": "string"}
    )
    assert duplicate.status == 409
    one = await checked(api, "GET", f"/contact_custom_fields/{field_id}")
    assert (one.status, one.body) == (200, created.body)
    assert (await checked(api, "GET", f"/contact_custom_fields/{MISSING_ID}")).status == 404
    too_long = await checked(
        api,
        "POST",
        "/contact_custom_fields",
        {"label": "x" * 51, "type": "string"},
        bad_request=True,
    )
    assert too_long.status == 400


async def test_custom_fields_collection(api: Api, sandbox: RunningSandbox) -> None:
    for number in range(3):
        sandbox.create_custom_field(f"Listed {secrets.token_hex(3)} {number}")
    first = await checked(api, "GET", "/contact_custom_fields?limit=2")
    assert len(first.body["custom_fields"]) == 2
    href = first.body["_links"]["next"]["href"]
    second = await checked(api, "GET", href.removeprefix("/v3"))
    assert second.status == 200
    assert second.body["custom_fields"]
    everything = await checked(api, "GET", "/contact_custom_fields?limit=100")
    assert len(everything.body["custom_fields"]) >= 3


async def test_custom_fields_past_the_account_limit() -> None:
    """The 101st field of an account is a 400 (its own sandbox: the shared one keeps few)."""
    try:
        with (
            running_sandbox(rate_limit=0, daily_quota=0) as sandbox,
            running_prism(sandbox.api_base) as prism,
        ):
            for number in range(100):
                sandbox.create_custom_field(f"Field {number}")
            async with aiohttp.ClientSession() as session:
                api = Api(session, prism, sandbox.access_token())
                over = await checked(
                    api, "POST", "/contact_custom_fields", {"label": "One more", "type": "string"}
                )
                page = await checked(api, "GET", "/contact_custom_fields?limit=100")
    except ServiceError as exc:
        pytest.fail(str(exc))
    assert over.status == 400
    assert len(page.body["custom_fields"]) == 100
    assert "_links" not in page.body or "next" not in page.body["_links"]
