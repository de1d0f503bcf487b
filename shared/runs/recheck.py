"""Every step of a function-app run checks again that the run may go on.

A run is allowed when it starts (the launcher checks the connection, its consent and
the caller's roles), but it may last hours, and people change things meanwhile. So
before prepare reads the segment and before every upload, poll and membership
change, the activity asks :class:`RunGate` whether the run's grant
(shared/runs/grants.py) still holds against the catalog as it stands:

- the export still exists and still sends with the run's connection;
- the connection still exists and is the one the run started with (its id: a
  connection removed and added again under the same name does not take over runs);
- its data-privacy consent is still accepted, and it is connected and not waiting
  to be reconnected;
- a run a person started: their roles (as they were) still reach the connection;
- the run's source lies in the app's inbox and is a run folder of the export's
  segments (as the catalog has them, whatever the run input says).

What fails stops the run with the reason (:class:`RunStopped`): nothing more is read
or sent, and the report says why. The check costs three small reads (the export, the
connection, its status secret), no Constant Contact request.

``ccexport run`` has no gate: the person at the command line names the folder and
holds the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.errors import InputError
from shared.exports.catalog import Catalog, ConnectionStatus
from shared.exports.definitions import ExportDefinition
from shared.runs.grants import APP_TRIGGERS, RunScope, RunStopped

__all__ = ["Cleared", "RunGate", "RunStopped", "check_source"]
from shared.segments.layout import parse_run_folder
from shared.storage import files


@dataclass(frozen=True)
class Cleared:
    """A step may go ahead."""

    connection_version: str
    """The connection record's ETag: a token manager made under another version is
    dropped, so a changed connection's cached access token is never used again."""


def check_source(source: str, export: ExportDefinition, inbox: str | None) -> None:
    """A run of the function app reads only a run folder of its inbox that one of its
    export's segments matches, whoever started it and whatever its input says: a run
    input naming another container, a path on the worker or another team's folder
    stops before anything is read. ``inbox`` None (the command line): any folder."""
    if inbox is None:
        return
    if inbox.startswith(files.BLOB_SCHEME):
        inside = source[len(inbox) :] if source.startswith(inbox) else None
    else:
        root, path = Path(inbox).resolve(), Path(source).resolve()
        inside = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
    if inside is None:
        raise InputError("the run's source is not in the inbox; nothing was read")
    folder = parse_run_folder(inside)
    if (
        folder is None
        or folder.table is None
        or not export.matches(folder.root, folder.export, folder.table)
    ):
        raise InputError(
            "the run's source is not a run folder of this export's segments; nothing was read"
        )


class RunGate:
    """The function app's check before each step of a run (see the module docstring)."""

    def __init__(self, catalog: Catalog, inbox: str) -> None:
        self.catalog = catalog
        self.inbox = inbox
        """``az://<container>/`` or a local folder: where runs may read."""

    async def check(self, scope: RunScope | None) -> Cleared:
        """Cleared, or RunStopped with the reason."""
        if scope is None:
            raise RunStopped(
                "the run does not say who started it or with which connection; nothing "
                "more is sent (start it again from the app)"
            )
        name, connection_name = scope.export, scope.connection
        stored = await self.catalog.export(name) if name else None
        if stored is None:
            raise RunStopped(f"export {name!r} was deleted after the run started")
        export = stored.value
        if export.connection != connection_name:
            raise RunStopped(
                f"export {name!r} now sends with connection {export.connection!r}, not "
                f"{connection_name!r} as when the run started"
            )
        found = await self.catalog.connection(connection_name)
        if found is None:
            raise RunStopped(
                f"connection {connection_name!r} was removed after the run started "
                "(its tokens are deleted)"
            )
        connection = found.value
        if connection.id != scope.grant.connection_id or not connection.sends(export):
            raise RunStopped(
                f"connection {connection_name!r} was removed and added again after the run "
                "started; the new connection does not take over the old one's runs"
            )
        if connection.consent is None:
            raise RunStopped(
                f"the data-privacy consent of connection {connection_name!r} was withdrawn"
            )
        status = await self.catalog.status_of(connection)
        if status is ConnectionStatus.NOT_CONNECTED:
            raise RunStopped(f"connection {connection_name!r} is not connected to Constant Contact")
        if status is ConnectionStatus.NEEDS_REAUTHORISATION:
            raise RunStopped(f"connection {connection_name!r} needs to be reconnected")
        grant = scope.grant
        person = scope.trigger not in APP_TRIGGERS
        if person and not (grant.admin or connection.allows(grant.roles)):
            raise RunStopped(
                f"whoever started the run may no longer use connection {connection_name!r}"
            )
        try:
            check_source(scope.source, export, self.inbox)
        except InputError as exc:
            raise RunStopped(str(exc)) from None
        return Cleared(found.etag)
