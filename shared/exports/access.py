"""Who may see and use which connections and export definitions.

A caller is an operator (the function key alone, or ``ccexport serve``'s user), an
admin, or a contributor known by their roles. Admins and operators may use every
connection; a contributor only connections whose ``roles`` include one of theirs, and
only the definitions that send over such a connection. These rules are the same
whatever asks: the HTTP API reads the caller from its headers and asks here.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import CcexportError
from shared.exports.catalog import Catalog, Connection, NotFound, Stored
from shared.exports.definitions import ExportDefinition

ADMIN_ROLE = "admin"


class Forbidden(CcexportError):
    """The caller is known but may not do this."""


@dataclass(frozen=True)
class Caller:
    id: str  # the principal's object id, or "function-key"; never a name or email
    roles: frozenset[str]  # case-folded
    key_only: bool = False

    @property
    def is_admin(self) -> bool:
        return self.key_only or ADMIN_ROLE in self.roles

    def may_use(self, connection: Connection | None) -> bool:
        if self.is_admin:
            return True
        return connection is not None and connection.allows(self.roles)

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"only an admin may {what}")


async def connection_of(catalog: Catalog, definition: ExportDefinition) -> Connection | None:
    """The connection a definition sends with, if it names one that exists and was
    saved for it: a connection added again under a removed one's name is not its
    (only an admin reaches such a definition, to save it again or delete it)."""
    if not definition.connection:
        return None
    stored = await catalog.connection(definition.connection)
    return stored.value if stored and stored.value.sends(definition) else None


async def require_use(catalog: Catalog, caller: Caller, definition: ExportDefinition) -> None:
    """Refuse a caller whose roles do not reach the definition's connection."""
    if not caller.may_use(await connection_of(catalog, definition)):
        raise Forbidden(
            f"export {definition.name!r}: your roles do not allow its connection "
            f"{definition.connection!r}"
        )


async def usable_export(catalog: Catalog, caller: Caller, name: str) -> Stored[ExportDefinition]:
    """A definition the caller may read or delete: 404 if there is none, 403 if its
    connection is not theirs."""
    existing = await catalog.export(name)
    if existing is None:
        raise NotFound(f"no export definition named {name!r}")
    await require_use(catalog, caller, existing.value)
    return existing


async def usable_exports(catalog: Catalog, caller: Caller) -> list[Stored[ExportDefinition]]:
    """The definitions whose connection the caller may use."""
    connections = {c.value.name: c.value for c in await catalog.connections()}
    usable = []
    for stored in await catalog.exports():
        connection = connections.get(stored.value.connection or "")
        if caller.may_use(connection if connection and connection.sends(stored.value) else None):
            usable.append(stored)
    return usable


async def usable_connection(catalog: Catalog, caller: Caller, name: str) -> Stored[Connection]:
    """A connection the caller may use. One they may not is answered as unknown, so a
    contributor cannot learn which connections exist beyond their own."""
    existing = await catalog.connection(name)
    if existing is None or not caller.may_use(existing.value):
        raise NotFound(f"no connection named {name!r}")
    return existing


async def usable_connections(catalog: Catalog, caller: Caller) -> list[Stored[Connection]]:
    """The connections the caller may use (all of them, for an admin)."""
    return [stored for stored in await catalog.connections() if caller.may_use(stored.value)]
