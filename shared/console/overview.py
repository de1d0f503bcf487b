"""What the console's home shows: what needs attention, then the exports.

Built from the catalog, the run index and each export's last run, for one caller: a
contributor sees only the connections and exports they may use
(shared.exports.access). Needs attention: connections that cannot send (no consent,
not connected, to reconnect), and exports whose last run failed, stopped, ran out of
quota, left contacts undelivered or waits for its removals to be confirmed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.console.run_view import RunState, Verdict, verdict
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


ATTENTION = {
    "failed": "its last run failed",
    "stopped": "its last run was stopped",
    "quota_exhausted": "its last run stopped when the daily quota ran out",
    "completed_with_errors": "its last run left contacts undelivered",
    "needs_confirmation": "its last run waits for its removals to be confirmed",
}
"""The statuses of a last run that need a person, and what the home page says."""

StatusOf = Callable[[str], Awaitable[Mapping[str, Any]]]
"""A run's Durable status by run id (functions/http_api/runs.py ``run_status``)."""


@dataclass(frozen=True)
class ExportLine:
    export: ExportDefinition
    last_run: RunRecord | None
    last_state: RunState | None = None

    @property
    def last_status(self) -> Verdict | None:
        return None if self.last_state is None else verdict(self.last_state)

    @property
    def attention(self) -> str | None:
        status = self.last_status
        return None if status is None else ATTENTION.get(status.key)


@dataclass(frozen=True)
class Overview:
    connections: tuple[ConnectionLine, ...]
    exports: tuple[ExportLine, ...]

    @property
    def attention(self) -> tuple[ConnectionLine, ...]:
        return tuple(line for line in self.connections if line.attention is not None)

    @property
    def runs_attention(self) -> tuple[ExportLine, ...]:
        return tuple(line for line in self.exports if line.attention is not None)


async def overview(
    catalog: Catalog, runs: RunIndex, caller: Caller, status_of: StatusOf | None = None
) -> Overview:
    connections = [
        ConnectionLine(stored.value, await catalog.status_of(stored.value))
        for stored in await usable_connections(catalog, caller)
    ]
    exports = []
    for stored in await usable_exports(catalog, caller):
        recent = await runs.recent(stored.value.name or "", 1)
        last = recent[0] if recent else None
        state = None
        if last is not None and status_of is not None:
            state = RunState.from_json(await status_of(last.run_id))
        exports.append(ExportLine(stored.value, last, state))
    return Overview(tuple(connections), tuple(sorted(exports, key=lambda e: e.export.name or "")))
