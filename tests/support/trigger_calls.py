"""The blob trigger's side without a host (tests/test_triggers.py and the tests of
accounts and chaos that reuse it): one export and run folder, export definitions and a
catalog seeded with them, and a blob event delivered to the trigger."""

from __future__ import annotations

from typing import Any

from azure.storage.blob.aio import BlobServiceClient

from functions import triggers
from shared.config import STORAGE_CONNECTION
from shared.exports import definitions as exports
from shared.exports.catalog import Catalog, Connection, ConnectionStatus, PrivacyConsent
from shared.storage.documents import BlobDocuments
from tests.support.function_harness import AppEnv, DurableFake, blob_binding

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
EXPORT = "CustomerInsights_abcd/BlobExport"
RUN = f"{EXPORT}/HighValue/2026/11/28/0930"
MODEL = f"{EXPORT}/model.json"


def definition(name: str = "high-value", **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "list_ids": [LIST_ID],
        "mapping": {"email": "PrimaryEmail"},
        "connection": "acme",
        "segments": [{"export": "BlobExport", "table": "HighValue"}],
        **changes,
    }


async def seed(app_env: AppEnv, *definitions: dict[str, Any]) -> None:
    async with BlobServiceClient.from_connection_string(app_env.connection_string) as service:
        catalog = Catalog(BlobDocuments(service.get_container_client(app_env.exports)))
        consent = PrivacyConsent("oid-admin", "2026-11-01T00:00:00Z")
        connected = ConnectionStatus.CONNECTED
        await catalog.save_connection(Connection("acme", "Acme", (), consent, connected))
        await catalog.save_connection(Connection("no-consent", "No consent", (), None, connected))
        for doc in definitions or (definition(),):
            await catalog.save_export(exports.from_json(doc))


async def blob_event(app_env: AppEnv, durable: DurableFake, name: str) -> None:
    handler = triggers.segment_blob_created.build().get_user_function().client_function
    await handler(
        client=blob_binding(STORAGE_CONNECTION, app_env.inbox, name), durable=durable.client()
    )
