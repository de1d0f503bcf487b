"""``/v3/contacts``: contacts by email, by list, one by id; cursor paging up to 500.

Paging follows the service: the response's ``_links.next.href`` is a relative
``/v3/contacts?cursor=...`` that carries the whole query; there is no ``next`` on the
last page. Filters the sandbox does not model (dates, tags, segments, SMS status)
are refused with 400 rather than silently ignored.
"""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from sandbox import wire
from sandbox.state import sandbox_of
from sandbox.store import IMPLICIT, UNSUBSCRIBED, Store
from sandbox.wire import ApiError

routes = web.RouteTableDef()

MAX_LIMIT = 500
MAX_LISTS_FILTER = 25
INCLUDES = frozenset(
    {"custom_fields", "list_memberships", "phone_numbers", "street_addresses", "taggings", "notes"}
)
# status filter value -> subscription states it selects (no deleted/pending contacts here)
STATUS_STATES = {
    "all": {IMPLICIT, UNSUBSCRIBED},
    "active": {IMPLICIT},
    "unsubscribed": {UNSUBSCRIBED},
    "deleted": set(),
    "not_set": set(),
    "pending_confirmation": set(),
    "temp_hold": set(),
}
UNMODELLED_FILTERS = (
    "segment_id", "tags", "updated_after", "updated_before", "created_after", "created_before",
    "optout_after", "optout_before", "sms_status",
)  # fmt: skip
TOP_LEVEL = (
    "first_name",
    "last_name",
    "job_title",
    "company_name",
    "birthday_month",
    "birthday_day",
    "anniversary",
)
PHONES = (
    ("phone", "other"), ("home_phone", "home"), ("work_phone", "work"),
    ("mobile_phone", "mobile"), ("other_phone", "other"),
)  # fmt: skip
ADDRESS_KINDS = (("", "home"), ("home_", "home"), ("work_", "work"), ("other_", "other"))


def _addresses(props: dict[str, Any]) -> list[dict[str, str]]:
    result: list[dict[str, str]] = []
    for prefix, kind in ADDRESS_KINDS:
        parts = {
            name: props.get(prefix + name)
            for name in ("street", "street2", "city", "state", "zip", "country")
        }
        if not any(parts.values()) or len(result) == 3:
            continue
        address = {"kind": kind}
        street = ", ".join(str(p) for p in (parts["street"], parts["street2"]) if p)
        if street:
            address["street"] = street[:255]
        for source, target in (
            ("city", "city"),
            ("state", "state"),
            ("zip", "postal_code"),
            ("country", "country"),
        ):
            if parts[source]:
                address[target] = str(parts[source])[:50]
        result.append(address)
    return result


def contact_document(
    store: Store, index: int, include: frozenset[str] | set[str]
) -> dict[str, Any]:
    """A ContactResource as the API returns it."""
    props = store.properties(index)
    key = store.keys[index]
    created, updated = wire.iso(store.created[index]), wire.iso(store.updated[index])
    doc: dict[str, Any] = {"contact_id": store.contact_id(index)}
    if "@" in key:
        email: dict[str, Any] = {
            "address": key,
            "permission_to_send": "implicit",
            "created_at": created,
            "updated_at": updated,
            "opt_in_source": "Account",
            "opt_in_date": created,
            "confirm_status": "off",
        }
        if store.is_unsubscribed(index):
            email["permission_to_send"] = "unsubscribed"
            email["opt_out_source"] = "Contact"
            email["opt_out_date"] = wire.iso(store.opted_out_at.get(index, store.updated[index]))
        doc["email_address"] = email
    for name in TOP_LEVEL:
        if name in props:
            doc[name] = props[name]
    doc.update(
        create_source="Account", update_source="Account", created_at=created, updated_at=updated
    )
    if "list_memberships" in include:
        doc["list_memberships"] = store.lists_of(index)
    if "custom_fields" in include:
        defined = store.custom_fields.by_name
        doc["custom_fields"] = [
            {"custom_field_id": defined[name[3:]].custom_field_id, "value": value}
            for name, value in props.items()
            if name.startswith("cf:") and name[3:] in defined
        ]
    if "phone_numbers" in include:
        doc["phone_numbers"] = [
            {"phone_number": str(props[name])[:25], "kind": kind}
            for name, kind in PHONES
            if name in props
        ][:3]
    if "street_addresses" in include:
        doc["street_addresses"] = _addresses(props)
    if "taggings" in include:
        doc["taggings"] = []
    if "notes" in include:
        doc["notes"] = []
    return doc


def _csv(request: web.Request, name: str) -> list[str]:
    raw = request.query.get(name)
    return [item.strip() for item in raw.split(",") if item.strip()] if raw else []


def _query(request: web.Request) -> dict[str, Any]:
    """The contacts query from the request (or from its cursor)."""
    cursor = request.query.get("cursor")
    if cursor is not None:
        state = wire.decode_cursor(cursor)
        if state is None or state.get("kind") != "contacts":
            raise ApiError(400, "cursor is not valid.")
        return state
    for name in UNMODELLED_FILTERS:
        if name in request.query:
            raise ApiError(400, f"The sandbox does not model the {name} filter.")
    lists = _csv(request, "lists")
    if len(lists) > MAX_LISTS_FILTER:
        raise ApiError(400, f"lists accepts at most {MAX_LISTS_FILTER} list ids.")
    include = _csv(request, "include")
    if any(item not in INCLUDES for item in include):
        raise ApiError(400, f"include accepts only {', '.join(sorted(INCLUDES))}.")
    statuses = _csv(request, "status")
    if any(status not in STATUS_STATES for status in statuses):
        raise ApiError(400, f"status accepts only {', '.join(STATUS_STATES)}.")
    states = sorted(set().union(*(STATUS_STATES[s] for s in statuses))) if statuses else None
    email = request.query.get("email")
    return {
        "kind": "contacts",
        "pos": 0,
        "email": email.strip().lower() if email is not None else None,
        "lists": lists,
        "states": states,
        "include": include,
        "limit": wire.query_int(request, "limit", 50, 1, MAX_LIMIT),
        "count": wire.query_bool(request, "include_count"),
    }


@routes.get("/v3/contacts")
async def get_contacts(request: web.Request) -> web.Response:
    store = sandbox_of(request).store
    query = _query(request)
    states = frozenset(query["states"]) if query["states"] is not None else None
    lists = [list_id for list_id in query["lists"] if list_id in store.lists]
    include = frozenset(query["include"])
    if query["email"] is not None:
        index = store.find(query["email"])
        matched = (
            [index]
            if index is not None
            and (states is None or store.state[index] in states)
            and (not query["lists"] or any(index in store.lists[i].members for i in lists))
            else []
        )
        page, more = matched, False
    elif query["lists"] and not lists:
        page, more = [], False  # only unknown lists: nobody is a member
    else:
        found = list(
            itertools.islice(store.iter_contacts(query["pos"], lists, states), query["limit"] + 1)
        )
        page, more = found[: query["limit"]], len(found) > query["limit"]
    body: dict[str, Any] = {"contacts": [contact_document(store, i, include) for i in page]}
    if query["count"]:
        if query["email"] is not None or (query["lists"] and not lists):
            body["contacts_count"] = len(page)
        elif len(lists) == 1 and states is None:
            body["contacts_count"] = store.lists[lists[0]].members.count
        else:
            body["contacts_count"] = sum(1 for _ in store.iter_contacts(0, lists, states))
    links: dict[str, Any] = {}
    if more:
        following = {**query, "pos": page[-1] + 1}
        links["next"] = {"href": f"/v3/contacts?cursor={wire.encode_cursor(following)}"}
    body["_links"] = links
    return wire.json_response(body)


@routes.get("/v3/contacts/{contact_id}")
async def get_contact(request: web.Request) -> web.Response:
    store = sandbox_of(request).store
    index = store.index_of(request.match_info["contact_id"])
    if index is None:
        raise ApiError(404, "The contact was not found.")
    include = _csv(request, "include")
    if any(item not in INCLUDES for item in include):
        raise ApiError(400, f"include accepts only {', '.join(sorted(INCLUDES))}.")
    return wire.json_response(contact_document(store, index, set(include)))
