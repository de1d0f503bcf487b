"""Sandbox bulk imports: lifecycle, pacing, 4 MB truncation, 40,000 rule, validation, CSV."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.sandbox_api import Api, api_for, people
from tests.support.sandbox_service import RunningSandbox

Factory = Callable[..., RunningSandbox]
LIMIT = 4_000_000  # "4 MB": bytes past this are dropped


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def api(sandbox: RunningSandbox, session: aiohttp.ClientSession) -> Api:
    return api_for(sandbox, session)


def wide_contact(i: int) -> dict[str, Any]:
    """~230 bytes of JSON, with braces, quotes and non-ASCII inside strings."""
    return {
        "email": f"wide{i}@example.com",
        "first_name": 'Zoë "Z" {x}',
        "last_name": "Björnsson-}{-" + str(i),
        "street": "12 Rue de l'Église, Bâtiment C, Escalier 4",
        "city": "Saint-Étienne",
        "cf:tier": "gold",
        "phone": "555-0100",
    }


def body_with_offsets(
    list_id: str, objects: list[bytes], list_ids_first: bool
) -> tuple[bytes, int]:
    """The raw JSON body and how many contacts end within the first 4,000,000 bytes."""
    list_part = b'"list_ids":["' + list_id.encode() + b'"]'
    head = b"{" + (list_part + b"," if list_ids_first else b"") + b'"import_data":['
    tail = b"]" + (b"" if list_ids_first else b"," + list_part) + b"}"
    position, kept = len(head), 0
    for obj in objects:
        position += len(obj)
        if position <= LIMIT:
            kept += 1
        position += 1  # the comma
    return head + b",".join(objects) + tail, kept


async def test_import_moves_through_initialized_processing_completed_at_the_set_pace(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0.3, import_rate=2000)
    api = api_for(sandbox, session)
    list_id = sandbox.create_list()
    started = time.monotonic()
    created = await api.post(
        "/activities/contacts_json_import", {"import_data": people(1000), "list_ids": [list_id]}
    )
    assert created.status == 201
    assert created.body["state"] == "initialized"
    assert created.body["_links"]["self"]["href"] == f"/v3/activities/{created.body['activity_id']}"
    seen: list[tuple[str, int]] = []
    while True:
        doc = (await api.get(f"/activities/{created.body['activity_id']}")).body
        seen.append((doc["state"], doc["percent_done"]))
        if doc["state"] == "completed":
            break
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    states = [state for state, _ in seen]
    assert states[0] == "initialized"
    assert "processing" in states
    assert any(0 < percent < 100 for state, percent in seen if state == "processing")
    assert states.index("processing") > 0
    assert states[-1] == "completed"
    assert elapsed >= 0.3 + 0.5 * 0.9  # 0.3 s initialized, then 1,000 contacts at 2,000/s
    assert doc["percent_done"] == 100
    assert doc["status"]["person_count"] == 1000
    assert doc["status"]["items_completed_count"] == 1000
    assert {"started_at", "completed_at", "created_at", "updated_at"} <= doc.keys()
    assert len(sandbox.members(list_id)) == 1000


@pytest.mark.parametrize("list_ids_first", [True, False])
async def test_contacts_past_4_mb_are_silently_dropped(
    sandbox: RunningSandbox, api: Api, list_ids_first: bool
) -> None:
    list_id = sandbox.create_list()
    contacts = [wide_contact(i) for i in range(22_000)]
    body, kept = body_with_offsets(list_id, [orjson.dumps(c) for c in contacts], list_ids_first)
    assert len(body) > LIMIT + 500_000
    assert 0 < kept < len(contacts)
    dropped_before = sandbox.stats()["dropped_contacts"]
    reply = await api.call(
        "POST",
        "/activities/contacts_json_import",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 201  # the request "succeeds"; the excess simply vanishes
    done = await api.wait_activity(reply.body["activity_id"])
    assert done["status"]["person_count"] == kept
    assert sorted(sandbox.members(list_id)) == sorted(c["email"] for c in contacts[:kept])
    assert sandbox.stats()["dropped_contacts"] - dropped_before == len(contacts) - kept


async def test_a_body_just_under_4_mb_is_imported_whole(sandbox: RunningSandbox, api: Api) -> None:
    list_id = sandbox.create_list()
    objects: list[bytes] = []
    size = 60
    while size < LIMIT - 1000:
        objects.append(orjson.dumps(wide_contact(len(objects))))
        size += len(objects[-1]) + 1
    body, kept = body_with_offsets(list_id, objects, list_ids_first=True)
    assert len(body) <= LIMIT
    assert kept == len(objects)
    reply = await api.call(
        "POST",
        "/activities/contacts_json_import",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    done = await api.wait_activity(reply.body["activity_id"])
    assert done["status"]["person_count"] == len(objects)


async def test_only_the_first_40000_json_contacts_are_imported(
    sandbox: RunningSandbox, api: Api
) -> None:
    list_id = sandbox.create_list()
    contacts = [{"email": f"m{i}@ex.io"} for i in range(40_010)]
    done = await api.import_json([list_id], contacts)
    assert done["status"]["person_count"] == 40_000
    members = set(sandbox.members(list_id))
    assert "m39999@ex.io" in members
    assert "m40000@ex.io" not in members


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"import_data": [{"email": "a@example.com"}]}, "list_ids"),
        ({"import_data": [{"email": "a@example.com"}], "list_ids": []}, "1 to 50"),
        (
            {"import_data": [{"email": "a@example.com"}], "list_ids": ["not-a-uuid"]},
            "not a valid UUID",
        ),
        (
            {
                "import_data": [{"email": "a@example.com"}],
                "list_ids": ["0c6b3b4e-0000-4000-8000-000000000000"],
            },
            "not found",
        ),
        ({"list_ids": ["LIST"]}, "import_data"),
        ({"import_data": [{"email": "x" * 40 + "@example.com"}], "list_ids": ["LIST"]}, "email"),
        (
            {
                "import_data": [{"email": "a@example.com", "birthday_month": "3"}],
                "list_ids": ["LIST"],
            },
            "integer",
        ),
        (
            {
                "import_data": [{"email": "a@example.com", "first_name": "n" * 51}],
                "list_ids": ["LIST"],
            },
            "first_name",
        ),
        ({"import_data": ["a@example.com"], "list_ids": ["LIST"]}, "object"),
    ],
)
async def test_schema_violations_get_400_in_the_documented_error_shape(
    sandbox: RunningSandbox, api: Api, body: dict[str, Any], fragment: str
) -> None:
    list_id = sandbox.create_list()
    payload = orjson.loads(orjson.dumps(body).replace(b"LIST", list_id.encode()))
    reply = await api.post("/activities/contacts_json_import", payload)
    assert reply.status == 400
    assert isinstance(reply.body, list)
    assert len(reply.body) == 1
    assert set(reply.body[0]) == {"error_key", "error_message"}
    assert fragment in reply.body[0]["error_message"]


async def test_malformed_json_and_wrong_media_type(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/activities/contacts_json_import",
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 400
    assert reply.body[0]["error_key"]
    reply = await api.call(
        "POST",
        "/activities/contacts_json_import",
        data=b"{}",
        headers={"Content-Type": "text/plain"},
    )
    assert reply.status == 415


async def test_contact_level_problems_are_counted_not_rejected(
    sandbox: RunningSandbox, api: Api
) -> None:
    list_id = sandbox.create_list()
    contacts = [
        {"email": "good@example.com"},
        {"email": "not-an-email"},
        {"first_name": "No Email"},
    ]
    done = await api.import_json([list_id], contacts)
    assert done["status"]["person_count"] == 1
    assert done["status"]["correctable_count"] == 1
    assert done["status"]["error_count"] == 1
    assert len(done["activity_errors"]) == 2
    assert sandbox.members(list_id) == ["good@example.com"]


async def test_unsubscribed_contacts_are_not_added_back(sandbox: RunningSandbox, api: Api) -> None:
    first, second = sandbox.create_list(), sandbox.create_list()
    contacts = people(5, domain="unsub.example.com")
    await api.import_json([first], contacts)
    assert sandbox.unsubscribe([contacts[0]["email"], contacts[3]["email"].upper()]) == 2
    done = await api.import_json([first, second], contacts)
    assert done["status"]["cannot_add_to_list_count"] == 2
    assert done["status"]["person_count"] == 5
    expected = sorted(c["email"] for i, c in enumerate(contacts) if i not in {0, 3})
    assert sorted(sandbox.members(first)) == expected
    assert sorted(sandbox.members(second)) == expected
    found = await api.get(f"/contacts?email={contacts[0]['email']}&status=unsubscribed")
    assert found.body["contacts"][0]["email_address"]["permission_to_send"] == "unsubscribed"


async def test_an_import_updates_only_the_properties_it_names(
    sandbox: RunningSandbox, api: Api
) -> None:
    sandbox.define_custom_fields("tier")
    list_id = sandbox.create_list()
    await api.import_json(
        [list_id],
        [{"email": "Keep@Example.com", "first_name": "Ann", "last_name": "Lee", "cf:tier": "gold"}],
    )
    await api.import_json([list_id], [{"email": "keep@example.com", "first_name": "Anna"}])
    found = await api.get("/contacts?email=KEEP@example.com&include=custom_fields")
    (contact,) = found.body["contacts"]
    assert (contact["first_name"], contact["last_name"]) == ("Anna", "Lee")
    assert contact["email_address"]["address"] == "keep@example.com"
    assert contact["email_address"]["permission_to_send"] == "implicit"
    assert [f["value"] for f in contact["custom_fields"]] == ["gold"]


def csv_form(list_id: str, data: bytes, file_name: str = "contacts.csv") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=file_name, content_type="text/csv")
    form.add_field("list_ids", list_id)
    return form


async def test_csv_import_with_its_line_and_size_limits(sandbox: RunningSandbox, api: Api) -> None:
    small = sandbox.create_list()
    csv_text = "email,first_name,last_name,birthday_month,birthday_day\r\n" + "".join(
        f'c{i}@example.com,Cé{i},"Doe, Jr",{1 + i % 12},{1 + i % 28}\r\n' for i in range(50)
    )
    reply = await api.call(
        "POST", "/activities/contacts_file_import", data=csv_form(small, csv_text.encode())
    )
    assert reply.status == 201, reply.body
    done = await api.wait_activity(reply.body["activity_id"])
    assert done["status"]["person_count"] == 50
    assert done["status"]["items_total_count"] == 51  # rows including the header
    assert done["source_file_name"] == "contacts.csv"
    assert len(sandbox.members(small)) == 50

    # 40,000 lines including the header: 39,999 contacts at most.
    many = sandbox.create_list()
    lines = "email\n" + "".join(f"l{i}@ex.io\n" for i in range(40_005))
    reply = await api.call(
        "POST", "/activities/contacts_file_import", data=csv_form(many, lines.encode())
    )
    done = await api.wait_activity(reply.body["activity_id"])
    assert done["status"]["person_count"] == 39_999

    # Past 4 MB: only the whole lines within the first 4,000,000 bytes.
    big = sandbox.create_list()
    header = "email,first_name,street\n"
    rows = [f"b{i}@example.com,Bertrand,{'x' * 130}\n" for i in range(30_000)]
    data = (header + "".join(rows)).encode()
    assert len(data) > LIMIT
    kept, size = 0, len(header)
    for row in rows:
        size += len(row)
        if size > LIMIT:
            break
        kept += 1
    reply = await api.call("POST", "/activities/contacts_file_import", data=csv_form(big, data))
    done = await api.wait_activity(reply.body["activity_id"])
    assert done["status"]["person_count"] == kept
    assert len(sandbox.members(big)) == kept


async def test_csv_import_refuses_other_files_and_unknown_lists(
    sandbox: RunningSandbox, api: Api
) -> None:
    list_id = sandbox.create_list()
    reply = await api.call(
        "POST",
        "/activities/contacts_file_import",
        data=csv_form(list_id, b"email\na@b.io\n", "c.txt"),
    )
    assert reply.status == 415
    reply = await api.call(
        "POST",
        "/activities/contacts_file_import",
        data=csv_form("0c6b3b4e-0000-4000-8000-000000000000", b"email\na@b.io\n"),
    )
    assert reply.status == 404
    reply = await api.call(
        "POST",
        "/activities/contacts_file_import",
        data=b"email\n",
        headers={"Content-Type": "text/csv"},
    )
    assert reply.status == 415


async def test_activities_list_filters_by_state(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0, import_rate=100)
    api = api_for(sandbox, session)
    list_id = sandbox.create_list()
    quick = await api.import_json([list_id], people(5))
    slow = (
        await api.post(
            "/activities/contacts_json_import", {"import_data": people(1000), "list_ids": [list_id]}
        )
    ).body
    queued = (
        await api.post(
            "/activities/contacts_json_import", {"import_data": people(3), "list_ids": [list_id]}
        )
    ).body
    await asyncio.sleep(0.2)
    completed = (await api.get("/activities?state=completed")).body["activities"]
    processing = (await api.get("/activities?state=processing")).body["activities"]
    everything = (await api.get("/activities?limit=2")).body
    assert [a["activity_id"] for a in completed] == [quick["activity_id"]]
    assert [a["activity_id"] for a in processing] == [slow["activity_id"]]
    assert processing[0]["status"]["items_completed_count"] < 1000
    # Newest first, two per page, then a relative next link.
    assert [a["activity_id"] for a in everything["activities"]] == [
        queued["activity_id"],
        slow["activity_id"],
    ]
    rest = (await api.get(everything["_links"]["next"]["href"].removeprefix("/v3"))).body
    assert [a["activity_id"] for a in rest["activities"]] == [quick["activity_id"]]
    assert (await api.get("/activities?state=sleeping")).status == 400
    assert (await api.get("/activities/1b5d1f52-0000-4000-8000-000000000000")).status == 404


async def test_property_rules_sms_only_contacts_and_the_home_country_spelling(
    sandbox: RunningSandbox, api: Api
) -> None:
    list_id = sandbox.create_list()
    contacts = [
        {"email": " Mixed@Example.com ", "first_name": "", "last_name": "Kept", "shoe_size": "44"},
        {"email": "home@example.com", "home_city": "Ghent", "home country": "BE"},
        {"sms_number": "123-123-1234"},
    ]
    done = await api.import_json([list_id], contacts)
    assert done["status"]["person_count"] == 3
    mixed = (await api.get("/contacts?email=mixed@example.com")).body["contacts"][0]
    assert mixed["last_name"] == "Kept"
    assert "first_name" not in mixed  # empty strings set nothing; unknown keys are ignored
    home = (await api.get("/contacts?email=home@example.com&include=street_addresses")).body[
        "contacts"
    ][0]
    assert home["street_addresses"] == [{"kind": "home", "city": "Ghent", "country": "BE"}]
    assert sandbox.members(list_id) == ["mixed@example.com", "home@example.com"]  # emails only
    assert sandbox.stats()["contacts"] >= 3
    too_many = {f"cf:f{i}": "x" for i in range(26)}
    reply = await api.post(
        "/activities/contacts_json_import",
        {"import_data": [{"email": "cf@example.com", **too_many}], "list_ids": [list_id]},
    )
    assert reply.status == 400
    assert "25 custom fields" in reply.body[0]["error_message"]
