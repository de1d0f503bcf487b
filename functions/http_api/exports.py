"""Export definitions: list, read, create or update (validated; starts nothing), delete.

Who may see or change which definition is shared.exports.access's rule; what a
definition may say, shared.exports.editing's.
"""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from functions.http_api.routes import CONNECTION_ROLES, Call, json_answer, route
from shared.exports.access import usable_export, usable_exports
from shared.exports.catalog import Stored
from shared.exports.definitions import ExportDefinition
from shared.exports.editing import definition_to_save

bp = df.Blueprint()


def _export_answer(status: int, stored: Stored[ExportDefinition]) -> func.HttpResponse:
    return json_answer(status, stored.value.to_json(), {"ETag": stored.etag})


@route(bp, "exports", GET=CONNECTION_ROLES)
async def exports_list(call: Call) -> func.HttpResponse:
    """The export definitions the caller may use."""
    found = [
        {"name": s.value.name, "etag": s.etag, "definition": s.value.to_json()}
        for s in await usable_exports(call.app.catalog, call.caller)
    ]
    return json_answer(200, {"exports": found})


@route(bp, "exports/{name}", GET=CONNECTION_ROLES, PUT=CONNECTION_ROLES, DELETE=CONNECTION_ROLES)
async def export_item(call: Call) -> func.HttpResponse:
    """Read, create or update (validated; starts nothing), or delete one definition."""
    name, catalog = call.param("name"), call.app.catalog
    if call.method == "GET":
        return _export_answer(200, await usable_export(catalog, call.caller, name))
    if call.method == "DELETE":
        await usable_export(catalog, call.caller, name)
        await catalog.delete_export(name, call.if_match())
        return func.HttpResponse(status_code=204)
    existing = await catalog.export(name)
    body, if_match = call.body(), call.if_match()
    definition = await definition_to_save(
        catalog, call.caller, name, body, existing=existing, if_match=if_match
    )
    etag = await catalog.save_export(definition, if_match)
    return _export_answer(201 if if_match is None else 200, Stored(definition, etag))
