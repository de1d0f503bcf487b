"""``/v3/contact_lists``: list, get and create contact lists.

``limit`` on the collection: the description says 1-500, the schema's ``maximum`` is
1000 (an inconsistency of the official spec); the sandbox accepts the schema's 1000.
``status`` takes one value or several, comma-separated, as its description says (the
spec declares a single enum; contract/constant-contact-v3.yaml an array).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sandbox import wire
from sandbox.state import Sandbox, sandbox_of
from sandbox.store import ContactList
from sandbox.wire import ApiError

routes = web.RouteTableDef()


def list_document(lst: ContactList, membership: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "list_id": lst.list_id,
        "name": lst.name,
        "description": lst.description,
        "favorite": lst.favorite,
        "created_at": wire.iso(lst.created_at),
        "updated_at": wire.iso(lst.updated_at),
    }
    if membership:
        doc["membership_count"] = lst.members.count
    return doc


def _membership_flag(request: web.Request) -> bool:
    value = request.query.get("include_membership_count")
    if value is not None and value not in {"all", "active"}:
        raise ApiError(400, "include_membership_count must be all or active.")
    return value is not None


def _statuses(request: web.Request) -> list[str]:
    raw = request.query.get("status", "active")
    statuses = [item.strip() for item in raw.split(",") if item.strip()]
    if not statuses or any(item not in {"all", "active", "deleted"} for item in statuses):
        raise ApiError(400, "status takes all, active or deleted, comma-separated.")
    return statuses


def _known(sandbox: Sandbox, list_id: str) -> ContactList:
    lst = sandbox.store.lists.get(list_id)
    if lst is None:
        raise ApiError(404, f"List {list_id} was not found.")
    return lst


@routes.get("/v3/contact_lists")
async def get_lists(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    query: dict[str, Any] = {}
    cursor = request.query.get("cursor")
    if cursor is not None:
        state = wire.decode_cursor(cursor)
        if state is None or state.get("kind") != "lists":
            raise ApiError(400, "cursor is not valid.")
        query = state
    else:
        query = {
            "kind": "lists",
            "limit": wire.query_int(request, "limit", 50, 1, 1000),
            "count": wire.query_bool(request, "include_count"),
            "membership": _membership_flag(request),
            "name": request.query.get("name"),
            "statuses": _statuses(request),
            "start": 0,
        }
    # No list is ever deleted here: "deleted" alone selects none.
    live = bool({"all", "active"} & set(query["statuses"]))
    chosen = [
        lst
        for lst in sandbox.store.lists.values()
        if (query["name"] is None or lst.name == query["name"]) and live
    ]
    start, limit = query["start"], query["limit"]
    page = chosen[start : start + limit]
    body: dict[str, Any] = {"lists": [list_document(lst, query["membership"]) for lst in page]}
    if query["count"]:
        body["lists_count"] = len(chosen)
    links: dict[str, Any] = {}
    if start + limit < len(chosen):
        cursor = wire.encode_cursor({**query, "start": start + limit})
        links["next"] = {"href": f"/v3/contact_lists?cursor={cursor}"}
    body["_links"] = links
    return wire.json_response(body)


@routes.get("/v3/contact_lists/{list_id}")
async def get_list(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    lst = _known(sandbox, request.match_info["list_id"])
    return wire.json_response(list_document(lst, _membership_flag(request)))


def create_list_from(sandbox: Sandbox, payload: Any) -> ContactList:
    """Validate a ListInput body and create the list (also used by ``/__sandbox/lists``)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise ApiError(400, "name is required and must be at most 255 characters.")
    favorite = payload.get("favorite", False)
    description = payload.get("description", "")
    if not isinstance(favorite, bool) or not isinstance(description, str):
        raise ApiError(400, "favorite must be a boolean and description a string.")
    return sandbox.store.create_list(name, description, favorite, sandbox.clock())


@routes.post("/v3/contact_lists")
async def create_list(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    lst = create_list_from(sandbox, await wire.json_body(request))
    return wire.json_response(list_document(lst, membership=False), status=201)
