"""The console's home: what needs attention first, then the exports and their last run."""

from __future__ import annotations

import azure.durable_functions as df

from functions.console.pages import Page, Visit, page
from functions.http_api.routes import CONNECTION_ROLES
from shared.console.overview import overview

bp = df.Blueprint()


@page(bp, "", GET=CONNECTION_ROLES)
async def console_home(visit: Visit) -> Page:
    """Connections that need an admin, then every export the caller may use."""
    found = await overview(visit.app.catalog, visit.app.runs, visit.caller)
    return Page("home.html", {"title": "Home", "overview": found})
