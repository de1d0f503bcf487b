"""Secrets, token locks, pacers, token managers, account access, the catalog's
documents, and the services every activity of a worker process shares."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from shared.config import Config, Settings
from shared.constant_contact.connect import Connections
from shared.constant_contact.oauth import OAuthClient
from shared.constant_contact.pacing import (
    LATE_AFTER,
    PACING_MARGIN,
    RESERVE_AHEAD,
    Pacer,
    Usage,
    key_label,
    process_pacer,
)
from shared.exports.account import AccountAccess, ConnectionsFactory
from shared.runs.activities import RunServices
from shared.secrets.opening import open_secret_store
from shared.secrets.store import SecretStore
from shared.storage.files import BLOB_SCHEME
from shared.storage.locks import BlobLeaseLocks, FileLocks, Locks
from shared.storage.names import storage_name
from shared.storage.records import BlobRecord, FileRecord, Record
from shared.telemetry import meters
from shared.wiring import stores

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

    from shared.runs.recheck import RunGate
    from shared.storage.documents import Documents


def secret_store(config: Config) -> SecretStore:
    """Key Vault when KEY_VAULT_URL is set, else files under CCEXPORT_HOME."""
    return open_secret_store(config.ctct.store_settings)


def token_locks(config: Config) -> Locks:
    """Token-refresh locks that everyone sharing the connection's tokens respects.

    Tokens in Key Vault are shared by every instance of the function app and its HTTP
    API's connect flow: blob leases in the exports container. Tokens in files under
    CCEXPORT_HOME: the file locks ``ccexport connect`` and ``check`` take.
    """
    if not config.ctct.key_vault_url or not config.app.has_storage:
        return FileLocks(config.home)
    service, _credential = stores.async_blob_service(config)  # lives as long as the process
    return BlobLeaseLocks(service.get_container_client(config.app.exports_container))


PACING_FOLDER = "pacing"
"""Where an API key's pacing records live: a folder of the exports container, or of
CCEXPORT_HOME."""

TOKEN_RATE = 1.0
"""The token endpoint's own limit: 1 request a second per API key."""


def pacing_record(config: Config, name: str) -> tuple[str, Callable[[], Record]]:
    """Where the pacing record ``name`` lives, and how to open it.

    With a storage connection: a blob in the exports container, so every process and
    instance of the app, and every ``ccexport`` command given the same storage,
    shares it. Without: a file under CCEXPORT_HOME, shared by the commands of one
    machine. The first value names the place (one pacer per place and key in a process).
    """
    file_name = f"{PACING_FOLDER}/{storage_name(name)}.json"
    app = config.app
    if not app.has_storage:
        path = config.home / file_name
        return str(path), lambda: FileRecord(path)
    account = (
        app.blob_service_uri
        or hashlib.sha256((app.connection_string or "").encode()).hexdigest()[:16]
    )
    place = f"blob:{account}/{app.exports_container}/{file_name}"

    def open_blob() -> Record:
        service = stores.blob_service(config)  # lives as long as the process
        assert service is not None  # has_storage
        return BlobRecord(service.get_container_client(app.exports_container), file_name)

    return place, open_blob


def run_pacer(config: Config) -> Pacer:
    """The process's pacer for the API key, at the margin runs keep under the limit.

    Constant Contact's limits are per key, so every client of the process shares it,
    and through its record (a blob with a storage connection, else a file under
    CCEXPORT_HOME) every other process that sends with the key.
    """
    rate = config.ctct.requests_per_second * PACING_MARGIN
    place, record = pacing_record(config, f"ctct-pace-{config.ctct.client_id}")
    pacer = process_pacer(
        config.ctct.client_id,
        rate,
        place=place,
        record=record,
        ahead=RESERVE_AHEAD,
        late_after=LATE_AFTER,
    )
    limit = config.ctct.daily_quota
    meters.watch_quota(pacer.key, lambda: (pacer.usage().used, limit))
    return pacer


def pacing_place(config: Config) -> str:
    """Where the key's day is counted, in words for people."""
    if config.app.has_storage:
        return f"the storage account's {config.app.exports_container} container ({PACING_FOLDER}/)"
    return str(config.home / PACING_FOLDER)


def key_usage(config: Config) -> Usage:
    """The API key's requests today as every pacer sharing its record counted them, and
    any quota stop (blocking: a blob read with a storage connection)."""
    return run_pacer(config).usage()


def token_pacer(config: Config) -> Pacer:
    """The token endpoint's budget for the API key, shared as ``run_pacer``'s is."""
    key = config.ctct.client_id
    place, record = pacing_record(config, f"ctct-token-pace-{key}")
    rate = TOKEN_RATE * PACING_MARGIN
    return process_pacer(f"token:{key}", rate, place=place, record=record, ahead=RESERVE_AHEAD)


def connections(
    settings: Settings, secrets: SecretStore, locks: Locks, token_pace: Pacer | None = None
) -> ConnectionsFactory:
    """Token managers for the connections, made on first use: the OAuth client needs
    the app's client secret, which may be a Key Vault read. ``token_pace`` paces the
    token endpoint (``token_pacer``; by default, this process alone)."""

    async def make() -> Connections:
        secret = await settings.resolve_client_secret(secrets)
        oauth = OAuthClient(
            settings.auth_base, settings.require_client_id(), secret, pacer=token_pace
        )
        return Connections(secrets, locks, oauth)

    return make


def shared_pacer(settings: Settings) -> Pacer:
    """The API key's budget shared by every command under one CCEXPORT_HOME, through a
    small state file (``connect``, ``check``, ``lists`` run side by side, and ``run``
    without a storage connection)."""
    name = storage_name(f"ctct-pace-{settings.client_id}")
    return Pacer(
        settings.requests_per_second,
        state_file=settings.home / PACING_FOLDER / f"{name}.json",
        key=key_label(settings.client_id),
    )


def account_access(config: Config, secrets: SecretStore, locks: Locks) -> AccountAccess:
    """Constant Contact clients for the connections' accounts (lists, custom fields,
    the look before a run starts), paced with the process's runs."""
    tokens = connections(config.ctct, secrets, locks, token_pacer(config))
    return AccountAccess(config.ctct, tokens, run_pacer(config))


def catalog_documents(config: Config, exports: ContainerClient | None = None) -> Documents:
    """Where the catalog and the run index live: the exports container (``exports``,
    or one made for this process), or, without a storage connection, files under
    CCEXPORT_HOME."""
    # The Blob SDK only where the catalog is read: `ccexport run` loads none of it.
    from shared.storage.documents import BlobDocuments, FolderDocuments  # noqa: PLC0415

    if not config.app.has_storage:
        return FolderDocuments(config.home / "catalog")
    if exports is None:
        service, _credential = stores.async_blob_service(config)  # lives with the process
        exports = service.get_container_client(config.app.exports_container)
    return BlobDocuments(exports)


def run_gate(config: Config, secrets: SecretStore) -> RunGate:
    """The function app's check before each step of a run: the catalog as it stands,
    and the inbox runs may read (the container or, for ``ccexport serve`` without
    storage, the local folder)."""
    from shared.exports.catalog import Catalog  # noqa: PLC0415 - see catalog_documents
    from shared.runs.recheck import RunGate  # noqa: PLC0415

    local = config.app.local_inbox if config.app.is_local else None
    inbox = str(local) if local is not None else f"{BLOB_SCHEME}{config.app.inbox_container}/"
    return RunGate(Catalog(catalog_documents(config), secrets), inbox)


def run_services(config: Config, *, confined: bool = False) -> RunServices:
    """Everything the run's activities use, for one worker process.

    ``confined`` (the function app): every step checks its run against the catalog
    and the app's inbox first (shared/runs/recheck.py).
    """
    blob = stores.blob_service(config)
    secrets = secret_store(config)
    locks = token_locks(config)
    return RunServices(
        settings=config.ctct,
        runs=stores.run_store(config, blob),
        blob_service=blob,
        secrets=secrets,
        locks=locks,
        pacer=run_pacer(config),
        connections=connections(config.ctct, secrets, locks, token_pacer(config)),
        gate=run_gate(config, secrets) if confined else None,
    )


def run_services_from(env: Mapping[str, str]) -> RunServices:
    """The activities' services from settings (a shorthand for tools and tests)."""
    return run_services(Config.from_mapping(env))
