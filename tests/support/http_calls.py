"""Calling the HTTP API's handlers without a host (tests/test_http_api.py and the tests
of accounts, mirror runs and security that reuse it): one export, one run folder, one
definition, the callers by role, and the requests that set up a connection."""

from __future__ import annotations

from typing import Any

import azure.functions as func
from azure.storage.blob.aio import BlobServiceClient

from functions import http_api
from shared.exports.catalog import Catalog
from shared.storage.documents import BlobDocuments
from tests.support.function_harness import AppEnv, DurableFake, http_request, principal

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
EXPORT = "CustomerInsights_abcd/BlobExport"
RUN = f"{EXPORT}/HighValue/2026/11/28/0930"
DEFINITION: dict[str, Any] = {
    "list_ids": [LIST_ID],
    "mapping": {"email": "PrimaryEmail"},
    "connection": "acme",
    "segments": [{"export": "BlobExport", "table": "HighValue"}],
}
ADMIN = principal(["admin"], object_id="the-admin")
MARKETING = principal(["marketing"])
SALES = principal(["sales"])


async def call(
    handler: Any,
    method: str,
    path: str,
    *,
    durable: DurableFake | None = None,
    **request: Any,
) -> func.HttpResponse:
    """Build the request from the path's route parameters and call the handler.

    The caller is the signed-in admin unless ``headers`` carry a principal of their
    own; ``headers={}`` calls with no signed-in caller at all.
    """
    given = request.get("headers")
    if given is None or (given and "x-ms-client-principal" not in given):
        request["headers"] = {**ADMIN, **(given or {})}
    route: dict[str, str] = {}
    parts = path.split("/")
    if parts[0] in ("exports", "connections", "runs") and len(parts) > 1:
        route["run_id" if parts[0] == "runs" else "name"] = parts[1]
    req = http_request(method, path, route_params=route, **request)
    user = handler.build().get_user_function()
    if durable is not None:
        response: func.HttpResponse = await user.client_function(req=req, client=durable.client())
    else:
        response = await user(req=req)
    return response


async def put_connection(
    body: dict[str, Any], name: str = "acme", headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return await call(
        http_api.connection_item, "PUT", f"connections/{name}", body=body, headers=headers or ADMIN
    )


async def mark_connected(app_env: AppEnv, name: str = "acme") -> None:
    async with BlobServiceClient.from_connection_string(app_env.connection_string) as service:
        await Catalog(BlobDocuments(service.get_container_client(app_env.exports))).mark_connected(
            name
        )


def consent(accepted: bool = True) -> dict[str, Any]:
    return {"privacy_consent": {"accepted": accepted}}
