"""The API key's day: how many requests every ccexport process sent with it today, of
its daily quota, and when the quota starts again (``ccexport usage --json`` reads the
same record)."""

from __future__ import annotations

import asyncio

import azure.durable_functions as df
import azure.functions as func

from functions.http_api.routes import CONNECTION_ROLES, Call, json_answer, route
from functions.principal import Forbidden
from shared.exports.access import usable_connections
from shared.wiring import clients

bp = df.Blueprint()


@route(bp, "usage", GET=CONNECTION_ROLES)  # of those, admins and users of a connection
async def key_usage(call: Call) -> func.HttpResponse:
    """The key's requests today as its pacers counted them: ``key`` (a label, never the
    key), ``day``, ``used``, ``limit``, ``left``, ``resets_at`` and ``stopped_until``
    (set while Constant Contact's quota_exceeded holds every request back)."""
    # The key serves every connection; its use is for those who use one (admins always).
    if not call.caller.is_admin and not await usable_connections(call.app.catalog, call.caller):
        raise Forbidden("only an admin or a user of a connection may read the API key's use")
    config = call.app.config
    usage = await asyncio.to_thread(clients.key_usage, config)  # a blob read
    return json_answer(200, usage.to_json(config.ctct.daily_quota))
