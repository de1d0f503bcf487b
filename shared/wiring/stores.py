"""Where the app's data lives: Blob clients and the run store.

Light on purpose (no aiohttp, no azure-core until a client is made): ``ccexport
prepare`` uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.config import Config
from shared.runs.store import BlobRunStore, LocalRunStore
from shared.storage.blobs import RANGE_BYTES

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.storage.blob import BlobServiceClient
    from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient


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
