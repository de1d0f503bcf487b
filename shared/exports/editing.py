"""What a person may send to create or change export definitions, connections and lists.

The catalog's writes are optimistic: a document that exists is only replaced by a
request that names the ETag it read (``If-Match``), so two people editing at once
cannot overwrite each other unknowingly; without one, a request only creates.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.errors import InputError
from shared.exports import account
from shared.exports import definitions as exports
from shared.exports.access import Caller, Forbidden, require_use
from shared.exports.catalog import Catalog, Connection, Stored, connection_from_request
from shared.exports.definitions import ExportDefinition
from shared.storage.documents import DocumentExists


def require_etag_to_replace(what: str, exists: bool, if_match: str | None, verb: str) -> None:
    """Refuse to overwrite an existing document without the ETag that was read."""
    if exists and if_match is None:
        raise DocumentExists(f"{what} exists; send If-Match with its ETag to {verb} it")


async def save_connection(
    catalog: Catalog, name: str, body: Any, *, principal_id: str, if_match: str | None
) -> Stored[Connection]:
    """Create (no ``if_match``) or change (only at ``if_match``) the connection ``name``
    as a person sent it (shared.exports.catalog.connection_from_request): what the
    HTTP API's PUT and the console's connection forms save. Who may is the caller's
    to check first (admins only)."""
    existing = await catalog.connection(name)
    require_etag_to_replace(f"connection {name!r}", existing is not None, if_match, "change")
    connection = connection_from_request(
        name, body, principal_id=principal_id, existing=existing.value if existing else None
    )
    return Stored(connection, await catalog.save_connection(connection, if_match))


async def definition_to_save(
    catalog: Catalog,
    caller: Caller,
    name: str,
    body: Any,
    *,
    existing: Stored[ExportDefinition] | None,
    if_match: str | None,
) -> ExportDefinition:
    """The definition a PUT may save under ``name``: valid, sending over a connection
    that exists and that the caller may use, and never taking over a definition
    whose connection is not theirs. It records the id of the connection it is saved
    for, whatever the request said (``connection_id``)."""
    if not isinstance(body, dict):
        raise InputError("export definition: expected a JSON object")
    if body.get("name", name) != name:
        raise InputError(f"export definition: the body names {body['name']!r}, the URL {name!r}")
    definition = exports.from_json({**body, "name": name})
    if not definition.connection:
        raise InputError("export definition: name the connection it sends with ('connection')")
    connection = await catalog.connection(definition.connection)
    if connection is None:
        raise InputError(
            f"export definition: connection {definition.connection!r} does not exist "
            "(an admin creates it with PUT /api/connections/{name})"
        )
    if not caller.may_use(connection.value):
        raise Forbidden(f"your roles do not allow connection {definition.connection!r}")
    if existing is not None:
        require_etag_to_replace(f"export {name!r}", True, if_match, "replace")
        await require_use(catalog, caller, existing.value)
    return replace(definition, connection_id=connection.value.id)


def new_list_name_of(body: Any) -> str:
    """The name of the list a request asks to create: ``{"name": "..."}`` and nothing else."""
    if not isinstance(body, dict) or set(body) != {"name"}:
        raise InputError('the body must be {"name": "<the new list\'s name>"}')
    return account.new_list_name(body["name"])
