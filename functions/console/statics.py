"""The console's stylesheet and script, served by the app itself (no build step)."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from functions.console.pages import Visit, page
from functions.http_api.routes import CONNECTION_ROLES
from shared.console.pages import static_file
from shared.console.safety import PAGE_HEADERS

bp = df.Blueprint()


@page(bp, "static/{name}", GET=CONNECTION_ROLES)
async def console_static(visit: Visit) -> func.HttpResponse:
    """``console.css`` or ``console.js``; nothing else."""
    found = static_file(visit.param("name"))
    if found is None:
        return func.HttpResponse("not found", status_code=404, headers=dict(PAGE_HEADERS))
    body, kind = found
    headers = {**PAGE_HEADERS, "Cache-Control": "private, max-age=300", "Content-Type": kind}
    return func.HttpResponse(body, status_code=200, headers=headers)
