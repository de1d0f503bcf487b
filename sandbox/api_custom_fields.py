"""``/v3/contact_custom_fields``: list, get and create custom-field definitions.

The collection takes ``limit`` 1-100 (default 50) as the spec declares, and pages
with an opaque ``cursor`` in ``_links.next.href``, like the sandbox's other
collections (the spec's ``CustomFields`` carries ``PagingLinks`` but declares no
cursor parameter; the real service's paging here is undocumented).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sandbox import wire
from sandbox.state import sandbox_of
from sandbox.wire import ApiError

routes = web.RouteTableDef()

PAGE_DEFAULT = 50
PAGE_MAX = 100


@routes.get("/v3/contact_custom_fields")
async def get_custom_fields(request: web.Request) -> web.Response:
    fields = sandbox_of(request).store.custom_fields.ordered()
    cursor = request.query.get("cursor")
    if cursor is not None:
        state = wire.decode_cursor(cursor)
        if (
            state is None
            or state.get("kind") != "custom_fields"
            or not isinstance(state.get("start"), int)
            or not isinstance(state.get("limit"), int)
        ):
            raise ApiError(400, "cursor is not valid.")
        start, limit = state["start"], state["limit"]
    else:
        start, limit = 0, wire.query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    page = fields[start : start + limit]
    links: dict[str, Any] = {}
    if start + limit < len(fields):
        following = wire.encode_cursor(
            {"kind": "custom_fields", "start": start + limit, "limit": limit}
        )
        links["next"] = {"href": f"/v3/contact_custom_fields?cursor={following}"}
    body = {"custom_fields": [field.document() for field in page], "_links": links}
    return wire.json_response(body)


@routes.get("/v3/contact_custom_fields/{custom_field_id}")
async def get_custom_field(request: web.Request) -> web.Response:
    field_id = request.match_info["custom_field_id"]
    field = sandbox_of(request).store.custom_fields.by_id.get(field_id)
    if field is None:
        raise ApiError(404, f"Custom field {field_id} was not found.")
    return wire.json_response(field.document())


@routes.post("/v3/contact_custom_fields")
async def create_custom_field(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    payload = await wire.json_body(request)
    field = sandbox.store.custom_fields.create(payload, sandbox.clock())
    return wire.json_response(field.document(), status=201)
