"""Sandbox custom fields: create, get, the collection and its paging, the 100-field cap,
and what an import does with a ``cf:`` key the account has no field for."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from tests.support.sandbox_api import Api, api_for
from tests.support.sandbox_service import RunningSandbox

Factory = Callable[..., RunningSandbox]
MISSING_ID = "0c6b3b4e-0000-4000-8000-000000000000"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def api(sandbox: RunningSandbox, session: aiohttp.ClientSession) -> Api:
    return api_for(sandbox, session)


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:6]}"


async def test_create_get_and_refuse_duplicates(api: Api) -> None:
    label = unique("Vehicle make and model year")
    created = await api.post("/contact_custom_fields", {"label": label, "type": "date"})
    assert created.status == 201
    field = created.body
    assert field["label"] == label
    assert field["name"] == label.replace(" ", "_")
    assert field["type"] == "date"
    assert str(uuid.UUID(field["custom_field_id"])) == field["custom_field_id"]
    assert field["created_at"].endswith("Z")

    one = await api.get(f"/contact_custom_fields/{field['custom_field_id']}")
    assert (one.status, one.body) == (200, field)
    assert (await api.get(f"/contact_custom_fields/{MISSING_ID}")).status == 404

    again = await api.post("/contact_custom_fields", {"label": label, "type": "string"})
    assert again.status == 409
    assert again.body[0]["error_key"] == "contacts.api.conflict"
    other_case = await api.post("/contact_custom_fields", {"label": label.upper(), "type": "date"})
    assert other_case.status == 409  # names are unique without regard to case


@pytest.mark.parametrize(
    "body",
    [
        {"type": "string"},
        {"label": "  ", "type": "string"},
        {"label": "x" * 51, "type": "string"},
        {"label": "Score", "type": "number"},
        {"label": "Score"},
        ["label"],
    ],
)
async def test_invalid_definitions_are_refused(api: Api, body: object) -> None:
    reply = await api.post("/contact_custom_fields", body)
    assert reply.status == 400
    assert reply.body[0]["error_key"] == "contacts.api.validation.error"


async def test_the_collection_pages_by_cursor(sandbox_factory: Factory) -> None:
    sandbox = sandbox_factory(rate_limit=0, daily_quota=0, token_rate_limit=0)
    async with aiohttp.ClientSession() as session:
        api = api_for(sandbox, session)
        assert (await api.get("/contact_custom_fields")).body == {
            "custom_fields": [],
            "_links": {},
        }
        names = [sandbox.create_custom_field(f"field {i}")["name"] for i in range(7)]
        first = await api.get("/contact_custom_fields")
        assert [f["name"] for f in first.body["custom_fields"]] == names  # default 50 a page
        assert first.body["_links"] == {}
        page = await api.get("/contact_custom_fields?limit=3")
        seen = [f["name"] for f in page.body["custom_fields"]]
        while "next" in page.body["_links"]:
            href = page.body["_links"]["next"]["href"]
            assert href.startswith("/v3/contact_custom_fields?cursor=")
            page = await api.get(href.removeprefix("/v3"))
            assert len(page.body["custom_fields"]) <= 3
            seen += [f["name"] for f in page.body["custom_fields"]]
        assert seen == names
        for bad in ("limit=0", "limit=101", "limit=x", "cursor=nope"):
            assert (await api.get(f"/contact_custom_fields?{bad}")).status == 400
        assert (await api.get("/contact_custom_fields?limit=100")).status == 200
        assert (
            await Api(session, sandbox.api_base, "not-a-token").get("/contact_custom_fields")
        ).status == 401


async def test_an_account_holds_at_most_100_custom_fields(sandbox_factory: Factory) -> None:
    sandbox = sandbox_factory(rate_limit=0, daily_quota=0, token_rate_limit=0)
    for i in range(100):
        sandbox.create_custom_field(f"f{i}")
    assert sandbox.stats()["custom_fields"] == 100
    async with aiohttp.ClientSession() as session:
        api = api_for(sandbox, session)
        refused = await api.post("/contact_custom_fields", {"label": "one more", "type": "string"})
        assert refused.status == 400
        assert "at most 100 custom fields" in refused.body[0]["error_message"]
        taken = await api.post("/contact_custom_fields", {"label": "f1", "type": "string"})
        assert taken.status == 409  # a duplicate is a conflict even when the account is full
        seen: list[str] = []
        href = "/contact_custom_fields?limit=100"
        while href:
            page = await api.get(href)
            seen += [f["name"] for f in page.body["custom_fields"]]
            href = page.body["_links"].get("next", {}).get("href", "").removeprefix("/v3")
    assert seen == [f"f{i}" for i in range(100)]


async def test_an_import_leaves_out_values_of_unknown_custom_fields(
    sandbox: RunningSandbox, api: Api
) -> None:
    name = unique("tier").replace(" ", "_")
    field = sandbox.create_custom_field(name)
    list_id = sandbox.create_list()
    contacts = [
        {"email": f"cf{i}@cf.example.com", f"cf:{name}": "gold", f"cf:{name}x": "typo"}
        for i in range(3)
    ]
    done = await api.import_json([list_id], contacts)
    assert done["state"] == "completed"
    assert done["status"]["person_count"] == 3  # the contacts themselves were imported
    assert (done["status"]["error_count"], done["status"]["correctable_count"]) == (0, 0)
    assert done["activity_errors"] == [
        f"cf:{name}x: no custom field named '{name}x' exists in the account; "
        "its values were not imported."
    ]  # once per import, not once per contact
    assert sorted(sandbox.members(list_id)) == [f"cf{i}@cf.example.com" for i in range(3)]
    found = await api.get("/contacts?email=cf1@cf.example.com&include=custom_fields")
    (contact,) = found.body["contacts"]
    assert contact["custom_fields"] == [
        {"custom_field_id": field["custom_field_id"], "value": "gold"}
    ]

    exported = await api.post("/activities/contact_exports", {"list_ids": [list_id]})
    result = await api.wait_activity(exported.body["activity_id"])
    text = (await api.get(result["_links"]["results"]["href"].removeprefix("/v3"))).body
    header = next(csv.reader(io.StringIO(text)))
    assert f"cf:{name}" in header
    assert f"cf:{name}x" not in header

    # Case matters: cf:<NAME> is not the field <name>.
    upper = await api.import_json(
        [list_id], [{"email": "cf9@cf.example.com", f"cf:{name.upper()}": "x"}]
    )
    assert len(upper["activity_errors"]) == 1


async def test_a_csv_import_leaves_out_unknown_custom_field_columns(
    sandbox: RunningSandbox, api: Api
) -> None:
    name = unique("region").replace(" ", "_")
    sandbox.create_custom_field(name)
    list_id = sandbox.create_list()
    form = aiohttp.FormData()
    data = f"email,cf:{name},cf:nope_{name}\ncsv1@cf.example.com,north,x\n".encode()
    form.add_field("file", data, filename="c.csv", content_type="text/csv")
    form.add_field("list_ids", list_id)
    reply = await api.call("POST", "/activities/contacts_file_import", data=form)
    assert reply.status == 201
    done = await api.wait_activity(reply.body["activity_id"])
    assert done["status"]["person_count"] == 1
    assert [e.split(":")[1] for e in done["activity_errors"]] == [f"nope_{name}"]
    found = await api.get("/contacts?email=csv1@cf.example.com&include=custom_fields")
    assert [f["value"] for f in found.body["contacts"][0]["custom_fields"]] == ["north"]
