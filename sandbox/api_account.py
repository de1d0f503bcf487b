"""``/v3/account/summary``: the account's organization and its owner, as My Account shows them.

The sandbox is one made-up account. Its owner's name and address are invented too
(``example.com`` is reserved for that), and they are sent as the real service sends
them, so a test can show that ccexport reads the organization's name and nothing of
the owner's. The route needs the ``account_read`` scope (app.py checks it), where the
rest of the API needs ``contact_data``.
"""

from __future__ import annotations

from aiohttp import web

from sandbox import wire

routes = web.RouteTableDef()

ACCOUNT_PATH = "/v3/account/"
"""The account's routes: they take the ``account_read`` scope, not ``contact_data``."""

SUMMARY = {
    "encoded_account_id": "a07e1sandbox0001",
    "organization_name": "Northwind Traders (sandbox)",
    "organization_phone": "+1 555 0100",
    "website": "https://northwind.example.com",
    "country_code": "US",
    "state_code": "MA",
    "time_zone_id": "America/New_York",
    "contact_email": "owner@northwind.example.com",
    "contact_phone": "+1 555 0101",
    "first_name": "Sandbox",
    "last_name": "Owner",
}
"""What ``GET /v3/account/summary`` answers: every field invented."""


@routes.get("/v3/account/summary")
async def get_account_summary(_request: web.Request) -> web.Response:
    return wire.json_response(SUMMARY)
