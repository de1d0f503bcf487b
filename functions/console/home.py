"""The console's home: what needs attention first, then the exports and their last run."""

from __future__ import annotations

import asyncio

import azure.durable_functions as df

from functions.console.pages import Page, Visit, page
from functions.http_api.routes import CONNECTION_ROLES
from functions.http_api.runs import run_status
from shared.console.overview import overview
from shared.wiring import clients

bp = df.Blueprint()


@page(bp, "", durable=True, GET=CONNECTION_ROLES)
async def console_home(visit: Visit) -> Page:
    """What needs attention (connections, last runs, a used-up daily quota), the API
    key's requests today, then every export the caller may use with its last run."""
    durable = visit.durable
    found = await overview(
        visit.app.catalog,
        visit.app.runs,
        visit.caller,
        lambda run_id: run_status(durable, run_id),
    )
    values: dict[str, object] = {"title": "Home", "overview": found, "usage": None}
    # The key serves every connection: its use is for admins and connection users.
    if visit.caller.is_admin or found.connections:
        config = visit.app.config
        usage = await asyncio.to_thread(clients.key_usage, config)  # a blob read
        quota = config.ctct.daily_quota
        values.update(
            usage=usage,
            used=f"{usage.used:,}",
            quota=f"{quota:,}",
            left=f"{usage.left(quota):,}",
        )
    return Page("home.html", values)
