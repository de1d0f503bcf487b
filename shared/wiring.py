"""The composition root: the one place that turns a ``Config`` into clients.

The function app (functions/services.py, functions/activities.py), the command line
and ``ccexport serve`` all build what they use here, so the storage connection has one
order of precedence, the managed identity one credential per client, the API key one
pacer per process and the OAuth client one way of being made. Everything below this
module takes its clients as arguments and never reads the environment.

The Azure SDKs are imported inside the functions that need them: a command on local
files (``ccexport prepare``) never loads azure-storage-blob or azure-identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.config import Config, Settings
from shared.constant_contact.connect import Connections
from shared.constant_contact.oauth import OAuthClient
from shared.constant_contact.pacing import PACING_MARGIN, Pacer, process_pacer
from shared.exports.account import AccountAccess, ConnectionsFactory
from shared.runs.activities import RunServices
from shared.runs.store import BlobRunStore, LocalRunStore
from shared.secrets.opening import open_secret_store
from shared.secrets.store import SecretStore
from shared.storage.blobs import RANGE_BYTES
from shared.storage.locks import BlobLeaseLocks, FileLocks, Locks
from shared.storage.names import storage_name

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.storage.blob import BlobServiceClient
    from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient


def config(env: Mapping[str, str]) -> Config:
    """The process's settings, parsed once (bad values are a ConfigError)."""
    return Config.from_mapping(env)


# --- Blob Storage -------------------------------------------------------------------------


def blob_service(config: Config) -> BlobServiceClient | None:
    """The app's Blob Storage for blocking code (run store, prepare), or None when unset.

    A connection string (Azurite, local runs) comes first; in Azure the app has the
    identity-based ``CCEXPORT_STORAGE__blobServiceUri`` and its managed identity.
    Downloads ask for ranges of RANGE_BYTES.
    """
    app = config.app
    if not app.has_storage:
        return None
    from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - only for Blob Storage

    if app.connection_string:
        return BlobServiceClient.from_connection_string(
            app.connection_string, max_single_get_size=RANGE_BYTES, max_chunk_get_size=RANGE_BYTES
        )
    from azure.identity import ManagedIdentityCredential  # noqa: PLC0415 - Azure only

    assert app.blob_service_uri is not None  # has_storage
    return BlobServiceClient(
        app.blob_service_uri,
        credential=ManagedIdentityCredential(client_id=app.identity_client_id),
        max_single_get_size=RANGE_BYTES,
        max_chunk_get_size=RANGE_BYTES,
    )


def async_blob_service(
    config: Config,
) -> tuple[AsyncBlobServiceClient, AsyncTokenCredential | None]:
    """The app's Blob Storage for async code, with the credential the caller must close
    after it (None for a connection string). A ConfigError when no storage is set."""
    app = config.app
    app.require_storage()
    from azure.storage.blob.aio import BlobServiceClient  # noqa: PLC0415 - see blob_service

    if app.connection_string:
        return BlobServiceClient.from_connection_string(app.connection_string), None
    from azure.identity.aio import ManagedIdentityCredential  # noqa: PLC0415 - Azure only

    assert app.blob_service_uri is not None  # require_storage
    credential = ManagedIdentityCredential(client_id=app.identity_client_id)
    return BlobServiceClient(app.blob_service_uri, credential=credential), credential


def run_store(
    config: Config, service: BlobServiceClient | None = None
) -> LocalRunStore | BlobRunStore:
    """Blob Storage when a storage connection is set, else CCEXPORT_HOME/runs."""
    blob = service if service is not None else blob_service(config)
    if blob is None:
        return LocalRunStore(config.home / "runs")
    return BlobRunStore(
        blob, staging=config.app.staging_container, reports=config.app.reports_container
    )


def open_run_store(env: Mapping[str, str]) -> LocalRunStore | BlobRunStore:
    """The run store the settings name (a shorthand for tools and tests)."""
    return run_store(Config.from_mapping(env))


# --- secrets, locks, tokens, pacing ---------------------------------------------------------


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
    service, _credential = async_blob_service(config)  # lives as long as the process
    return BlobLeaseLocks(service.get_container_client(config.app.exports_container))


def run_pacer(config: Config) -> Pacer:
    """The process's pacer for the API key, at the margin runs keep under the limit.

    Constant Contact's limits are per key, so every client of the process shares it.
    """
    rate = config.ctct.requests_per_second * PACING_MARGIN
    return process_pacer(config.ctct.client_id, rate)


def connections(settings: Settings, secrets: SecretStore, locks: Locks) -> ConnectionsFactory:
    """Token managers for the connections, made on first use: the OAuth client needs
    the app's client secret, which may be a Key Vault read."""

    async def make() -> Connections:
        secret = await settings.resolve_client_secret(secrets)
        oauth = OAuthClient(settings.auth_base, settings.require_client_id(), secret)
        return Connections(secrets, locks, oauth)

    return make


def shared_pacer(settings: Settings) -> Pacer:
    """The API key's budget shared by every command under one CCEXPORT_HOME, through a
    small state file (``connect``, ``check``, ``lists`` run side by side)."""
    name = storage_name(f"ctct-pace-{settings.client_id}")
    return Pacer(settings.requests_per_second, state_file=settings.home / "pacing" / f"{name}.json")


def account_access(config: Config, secrets: SecretStore, locks: Locks) -> AccountAccess:
    """Constant Contact clients for the connections' accounts (lists, custom fields,
    the look before a run starts), paced with the process's runs."""
    return AccountAccess(config.ctct, connections(config.ctct, secrets, locks), run_pacer(config))


def run_services(config: Config) -> RunServices:
    """Everything the run's activities use, for one worker process."""
    blob = blob_service(config)
    secrets = secret_store(config)
    locks = token_locks(config)
    return RunServices(
        settings=config.ctct,
        runs=run_store(config, blob),
        blob_service=blob,
        secrets=secrets,
        locks=locks,
        pacer=run_pacer(config),
        connections=connections(config.ctct, secrets, locks),
    )


def run_services_from(env: Mapping[str, str]) -> RunServices:
    """The activities' services from settings (a shorthand for tools and tests)."""
    return run_services(Config.from_mapping(env))
