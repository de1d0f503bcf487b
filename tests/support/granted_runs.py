"""A catalog the function app's runs are checked against (shared/runs/recheck.py):
an export, its connection (consented, connected), and run inputs granted as the
launcher grants them. Folders under a temporary CCEXPORT_HOME, as ``ccexport serve``
keeps them without storage."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from shared.exports.access import Caller
from shared.exports.catalog import (
    Catalog,
    Connection,
    ConnectionStatus,
    PrivacyConsent,
    new_connection_id,
)
from shared.exports.definitions import ExportDefinition
from shared.runs.contract import RunInput, RunOptions
from shared.runs.grants import RunGrant
from shared.runs.recheck import RunGate
from shared.secrets.store import LocalFileSecretStore
from shared.storage.documents import FolderDocuments

MARKETER = Caller("oid-marketer", frozenset({"marketing"}))


def home_catalog(home: Path) -> Catalog:
    """The catalog ``ccexport serve`` keeps under ``home`` (no storage connection)."""
    return Catalog(FolderDocuments(home / "catalog"), LocalFileSecretStore(home))


def gate_for(home: Path, inbox: str) -> RunGate:
    return RunGate(home_catalog(home), inbox)


async def save_ready(
    catalog: Catalog, export: ExportDefinition, *, roles: tuple[str, ...] = ("marketing",)
) -> tuple[ExportDefinition, Connection]:
    """Save ``export`` and its connection, consented and connected; the definition as
    the HTTP API saves it (with the connection's id)."""
    name = export.connection or "default"
    connection = Connection(
        name,
        name.title(),
        roles=roles,
        consent=PrivacyConsent("oid-admin", "2026-01-01T00:00:00Z"),
        status=ConnectionStatus.CONNECTED,
        id=new_connection_id(),
    )
    existing = await catalog.connection(name)
    await catalog.save_connection(connection, existing.etag if existing else None)
    saved = replace(export, connection=name, connection_id=connection.id)
    stored = await catalog.export(saved.name or "")
    await catalog.save_export(saved, stored.etag if stored else None)
    return saved, connection


def granted(
    run_id: str,
    export: ExportDefinition,
    connection: Connection,
    source: str,
    *,
    caller: Caller | None = MARKETER,
    trigger: str = "http",
    options: RunOptions | None = None,
) -> RunInput:
    """A run input as the launcher makes it for ``caller`` (None: the app's trigger)."""
    return RunInput.create(
        run_id,
        export,
        source,
        connection=connection.name,
        trigger=trigger,
        requested_at=datetime.now(UTC),
        options=options,
        grant=RunGrant.given(connection.id, trigger, caller),
    )
