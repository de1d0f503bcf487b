"""Blob Storage clients, built once at the edge from settings and passed in.

Downloads are asked for in 4 MiB ranges, so reading the first rows of a large segment
file does not first pull 32 MiB (the SDK's default first range).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

RANGE_BYTES = 4 << 20
CONNECTION_SETTINGS = (
    "CCEXPORT_STORAGE",
    "CCEXPORT_STORAGE_CONNECTION_STRING",
    "AzureWebJobsStorage",
)
"""In the order the function app reads them (shared.config.AppSettings)."""


def connection_string(env: Mapping[str, str]) -> str | None:
    """The first storage connection string set among the known settings."""
    for name in CONNECTION_SETTINGS:
        value = env.get(name, "").strip()
        if value and "=" in value:
            return value
    return None


def blob_service(conn_str: str) -> BlobServiceClient:
    # The Azure SDK is loaded only for Blob Storage: commands on local files (prepare)
    # stay about 40 MB lighter without it.
    from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - see above

    return BlobServiceClient.from_connection_string(
        conn_str, max_single_get_size=RANGE_BYTES, max_chunk_get_size=RANGE_BYTES
    )
