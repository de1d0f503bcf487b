"""What the console's home shows: what needs attention, then the exports.

Built from the catalog and the run index, for one caller: a contributor sees only the
connections and exports they may use (shared.exports.access), and an admin's
"needs attention" includes connections nobody may send with yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.exports.access import Caller, usable_connections, usable_exports
from shared.exports.catalog import Catalog, Connection, ConnectionStatus
from shared.exports.definitions import ExportDefinition
from shared.runs.index import RunIndex, RunRecord


@dataclass(frozen=True)
class ConnectionLine:
    connection: Connection
    status: ConnectionStatus

    @property
    def attention(self) -> str | None:
        """What an admin must do before exports can send with it, or None."""
        if self.connection.consent is None:
            return "accept the data privacy and compliance terms"
        if self.status is ConnectionStatus.NOT_CONNECTED:
            return "connect it to a Constant Contact account"
        if self.status is ConnectionStatus.NEEDS_REAUTHORISATION:
            return "reconnect it: Constant Contact no longer accepts its sign-in"
        return None


@dataclass(frozen=True)
class ExportLine:
    export: ExportDefinition
    last_run: RunRecord | None


@dataclass(frozen=True)
class Overview:
    connections: tuple[ConnectionLine, ...]
    exports: tuple[ExportLine, ...]

    @property
    def attention(self) -> tuple[ConnectionLine, ...]:
        return tuple(line for line in self.connections if line.attention is not None)


async def overview(catalog: Catalog, runs: RunIndex, caller: Caller) -> Overview:
    connections = [
        ConnectionLine(stored.value, await catalog.status_of(stored.value))
        for stored in await usable_connections(catalog, caller)
    ]
    exports = []
    for stored in await usable_exports(catalog, caller):
        recent = await runs.recent(stored.value.name or "", 1)
        exports.append(ExportLine(stored.value, recent[0] if recent else None))
    return Overview(tuple(connections), tuple(sorted(exports, key=lambda e: e.export.name or "")))
