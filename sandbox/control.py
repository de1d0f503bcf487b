"""``/__sandbox/...``: the test and benchmark controls, outside the Constant Contact API.

These endpoints need no token, are not rate limited, are not counted in the request
stats, and never see injected faults. They exist only in the sandbox.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from sandbox import wire
from sandbox.api_lists import create_list_from, list_document
from sandbox.faults import FaultError
from sandbox.oauth import SCOPES
from sandbox.state import Sandbox, sandbox_of
from sandbox.wire import ApiError

routes = web.RouteTableDef()

DEFAULT_SCOPES = ("contact_data", "offline_access")


async def _payload(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "The body must be a JSON object.") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return payload


@routes.get("/__sandbox/stats")
async def stats(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    return wire.json_response(
        {
            "state": "in-memory",
            "requests": sandbox.stats.snapshot(),
            "invalid_grant": sandbox.oauth.invalid_grant,
            "tokens_issued": sandbox.oauth.tokens_issued,
            "throttled": sandbox.limits.hits["throttled"],
            "throttled_windows": sandbox.limits.refusals,
            "loop_lag": {
                "worst": round(sandbox.loop_lag.worst, 3),
                "stalls": sandbox.loop_lag.stalls,
            },
            "quota_exceeded": sandbox.limits.hits["quota_exceeded"],
            "daily_used": dict(sandbox.limits.quota.used),
            "busy_span": {
                key: {"first_at": first, "last_at": last}
                for key, (first, last) in sandbox.limits.span.items()
            },
            "per_second": {
                key: {str(second): n for second, n in sorted(seconds.items())}
                for key, seconds in sandbox.limits.per_second.items()
            },
            "in_flight": {key: n for key, n in sandbox.limits.in_flight.items() if n},
            "in_flight_peak": dict(sandbox.limits.in_flight_peak),
            "contacts": len(sandbox.store),
            "lists": len(sandbox.store.lists),
            "custom_fields": len(sandbox.store.custom_fields),
            "activities": sandbox.activities.counts(),
            "dropped_contacts": sandbox.counters["dropped_contacts"],
            "faults": dict(sandbox.faults.fired),
        }
    )


@routes.get("/__sandbox/authorization")
async def authorization(request: web.Request) -> web.Response:
    """What the requests made with one authorization's tokens met (``?token=`` any access
    or refresh token it was issued): its id (for a fault's ``authorization``), its
    requests by template and status, the faults fired on them, its 429 ``throttled``."""
    found = sandbox_of(request).stats.authorization(request.query.get("token", ""))
    if found is None:
        raise ApiError(404, "No authorization issued that token.")
    return wire.json_response(found.snapshot())


@routes.get("/__sandbox/imports")
async def imports(request: web.Request) -> web.Response:
    """Each import body accepted (by SHA-256), optionally only those for ``?list_id=``,
    with the state of every activity it started: how often each chunk was sent."""
    sandbox = sandbox_of(request)
    wanted = request.query.get("list_id")
    found = sandbox.activities.by_id
    bodies = [
        {
            "digest": digest,
            "list_ids": body.list_ids,
            "states": [found[a].state for a in body.activity_ids if a in found],
        }
        for digest, body in sandbox.imports.items()
        if wanted is None or wanted in body.list_ids
    ]
    return wire.json_response({"bodies": bodies})


@routes.post("/__sandbox/stats/reset")
async def reset_stats(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    sandbox.stats.reset()
    sandbox.oauth.invalid_grant = 0
    sandbox.limits.hits.update(throttled=0, quota_exceeded=0)
    sandbox.limits.span.clear()
    sandbox.limits.per_second.clear()
    sandbox.limits.refusals.clear()
    sandbox.loop_lag.reset()
    sandbox.limits.reset_peaks()
    return wire.json_response({"reset": True})


@routes.post("/__sandbox/usage/reset")
async def reset_usage(request: web.Request) -> web.Response:
    """Start a new day: clear the daily quota and the per-second windows."""
    sandbox = sandbox_of(request)
    sandbox.limits.quota.reset()
    sandbox.limits.api.reset()
    sandbox.limits.token.reset()
    return wire.json_response({"reset": True})


@routes.get("/__sandbox/lists/{list_id}/members")
async def members(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    list_id = request.match_info["list_id"]
    if list_id not in sandbox.store.lists:
        raise ApiError(404, f"List {list_id} was not found.")
    return wire.json_response({"list_id": list_id, "emails": sandbox.store.member_emails(list_id)})


@routes.post("/__sandbox/lists")
async def create_list(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    lst = create_list_from(sandbox, await _payload(request))
    return wire.json_response(list_document(lst, membership=True), status=201)


@routes.post("/__sandbox/custom_fields")
async def create_custom_field(request: web.Request) -> web.Response:
    """``{"label": ..., "type": "string"}`` (type optional) -> a custom field, as the API
    would create it (same rules: 409 for a name taken, 400 past 100 fields)."""
    sandbox = sandbox_of(request)
    payload = await _payload(request)
    field = sandbox.store.custom_fields.create({"type": "string", **payload}, sandbox.clock())
    return wire.json_response(field.document(), status=201)


@routes.post("/__sandbox/tokens")
async def mint_tokens(request: web.Request) -> web.Response:
    """A token response as if the account had just authorised the app."""
    sandbox = sandbox_of(request)
    payload = await _payload(request)
    scopes = tuple(str(payload.get("scope", " ".join(DEFAULT_SCOPES))).split())
    if not scopes or any(scope not in SCOPES for scope in scopes):
        raise ApiError(400, "scope has an unknown scope.")
    issuer = f"{request.scheme}://{request.host}/oauth2/default"
    return wire.json_response(sandbox.oauth.mint(scopes, issuer), status=201)


@routes.post("/__sandbox/contacts/unsubscribe")
async def unsubscribe(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    emails = (await _payload(request)).get("emails")
    if not isinstance(emails, list) or not all(isinstance(e, str) and "@" in e for e in emails):
        raise ApiError(400, "emails must be an array of email addresses.")
    count = sandbox.store.unsubscribe(emails, sandbox.clock())
    return wire.json_response({"unsubscribed": count})


@routes.get("/__sandbox/faults")
async def get_faults(request: web.Request) -> web.Response:
    return wire.json_response(sandbox_of(request).faults.snapshot())


@routes.post("/__sandbox/faults")
async def set_faults(request: web.Request) -> web.Response:
    """Merge fault settings, e.g. ``{"http_503": {"rate": 1, "count": 2}}``; ``{"clear": true}``."""
    faults = sandbox_of(request).faults
    payload = await _payload(request)
    if payload.pop("clear", False):
        faults.clear()
    try:
        faults.update(payload)
    except FaultError as exc:
        raise ApiError(400, str(exc)) from None
    return wire.json_response(faults.snapshot())


_SETTINGS: dict[str, tuple[type, float]] = {
    "requests_per_second": (float, 0),
    "daily_quota": (int, 0),
    "token_requests_per_second": (float, 0),
    "max_queued_activities": (int, 1),
    "activity_delay": (float, 0),
    "items_per_second": (float, 1),
    "access_token_ttl": (float, 1),
}


def _apply_setting(sandbox: Sandbox, name: str, value: float) -> None:
    if name == "requests_per_second":
        sandbox.limits.api.limit = value
    elif name == "daily_quota":
        sandbox.limits.quota.limit = int(value)
    elif name == "token_requests_per_second":
        sandbox.limits.token.limit = value
    elif name == "max_queued_activities":
        sandbox.activities.max_queued = int(value)
    elif name == "activity_delay":
        sandbox.activities.pace.delay = value
    elif name == "items_per_second":
        sandbox.activities.pace.items_per_second = value
    elif name == "access_token_ttl":
        sandbox.oauth.access_ttl = value


@routes.get("/__sandbox/settings")
async def get_settings(request: web.Request) -> web.Response:
    return wire.json_response(sandbox_of(request).settings())


@routes.post("/__sandbox/settings")
async def set_settings(request: web.Request) -> web.Response:
    """Change limits and pacing at run time (0 per-second or quota means unlimited)."""
    sandbox = sandbox_of(request)
    payload = await _payload(request)
    for name, value in payload.items():
        if name not in _SETTINGS:
            raise ApiError(400, f"unknown setting {name!r}; known: {', '.join(_SETTINGS)}")
        kind, low = _SETTINGS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            raise ApiError(400, f"{name} must be a number >= {low}")
        if kind is int and value != int(value):
            raise ApiError(400, f"{name} must be an integer")
    for name, value in payload.items():
        _apply_setting(sandbox, name, value)
    return wire.json_response(sandbox.settings())
