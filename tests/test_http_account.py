"""The HTTP API's view of a connection's account (its lists, a new list, its custom
fields) and the look at the account before a run starts (list names, custom fields):
handlers called without a host, the catalog on Azurite, tokens in the secret store,
a fresh sandbox over real HTTP."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from functions import http_api
from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.tokens import tokens_secret
from shared.exports import definitions as exports
from shared.exports.catalog import Catalog
from shared.runs.contract import RunInput
from shared.secrets.store import LocalFileSecretStore
from shared.storage.documents import BlobDocuments
from tests.support.function_harness import AppEnv, DurableFake, principal, response_json
from tests.support.http_calls import (
    ADMIN,
    EXPORT,
    MARKETING,
    RUN,
    SALES,
    call,
    consent,
    mark_connected,
    put_connection,
)
from tests.support.sandbox_service import RunningSandbox
from tests.support.trigger_calls import blob_event

pytestmark = pytest.mark.azurite

Factory = Callable[..., RunningSandbox]
FAST = {"rate_limit": 0, "daily_quota": 0, "token_rate_limit": 0, "activity_delay": 0}
LISTS = "GET /v3/contact_lists"
CREATE_LIST = "POST /v3/contact_lists"
FIELDS = "GET /v3/contact_custom_fields"
NO_ROLES = principal([])
FORGED = {"x-ms-client-principal": "%%%"}


@pytest.fixture
async def account(
    app_env: AppEnv, sandbox_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> RunningSandbox:
    """A fresh sandbox account behind connection 'acme' (roles: marketing), connected."""
    sandbox = sandbox_factory(**FAST)
    for name, value in sandbox.ctct_settings().items():
        monkeypatch.setenv(name, value)
    created = await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    assert created.status_code == 201
    bundle = TokenBundle.from_response(sandbox.tokens(), time.time())
    async with LocalFileSecretStore(app_env.home) as secrets:
        await secrets.set(tokens_secret("acme"), bundle.to_json())
    await mark_connected(app_env)
    return sandbox


def asked(sandbox: RunningSandbox, key: str) -> int:
    return sum(sandbox.requests(key).values())


async def test_connection_users_see_lists_and_custom_fields_and_create_a_list(
    account: RunningSandbox,
) -> None:
    news = account.create_list("Newsletter NL")
    account.create_custom_field("tier")
    lists, fields = http_api.connection_lists, http_api.connection_custom_fields

    for who in (ADMIN, MARKETING):
        shown = await call(lists, "GET", "connections/acme/lists", headers=who)
        assert shown.status_code == 200
        assert response_json(shown) == {
            "connection": "acme",
            "lists": [{"list_id": news, "name": "Newsletter NL", "membership_count": 0}],
        }
    described = await call(fields, "GET", "connections/acme/custom_fields", headers=MARKETING)
    assert described.status_code == 200
    [tier] = response_json(described)["custom_fields"]
    assert (tier["name"], tier["label"], tier["type"]) == ("tier", "tier", "string")
    assert str(uuid.UUID(tier["custom_field_id"])) == tier["custom_field_id"]

    made = await call(
        lists, "POST", "connections/acme/lists", body={"name": "Spring promo"}, headers=MARKETING
    )
    assert made.status_code == 201
    created = response_json(made)
    assert (created["created"], created["list"]["name"]) == (True, "Spring promo")
    again = await call(lists, "POST", "connections/acme/lists", body={"name": "Spring promo"})
    assert again.status_code == 200
    assert response_json(again) == {**created, "created": False}
    assert account.stats()["lists"] == 2

    for bad in ({"name": ""}, {"nom": "x"}, {"name": news}, {"name": 7}, ["x"]):
        refused = await call(lists, "POST", "connections/acme/lists", body=bad)
        assert refused.status_code == 400, bad
    assert account.stats()["lists"] == 2


async def test_callers_who_may_not_use_the_connection_are_refused_before_any_request(
    account: RunningSandbox,
) -> None:
    account.create_list("Newsletter NL")
    lists, fields = http_api.connection_lists, http_api.connection_custom_fields
    before = {key: asked(account, key) for key in (LISTS, CREATE_LIST, FIELDS)}
    for who, status in ((SALES, 404), (NO_ROLES, 404), (FORGED, 401)):
        for handler, method, path, body in (
            (lists, "GET", "connections/acme/lists", None),
            (lists, "POST", "connections/acme/lists", {"name": "Intruder"}),
            (fields, "GET", "connections/acme/custom_fields", None),
        ):
            refused = await call(handler, method, path, headers=who, body=body)
            assert refused.status_code == status, (who, method, path)
            error = response_json(refused)["error"]
            assert "Newsletter" not in error
            if status == 404:
                assert error == "no connection named 'acme'"  # the same as an unknown one
    unknown = await call(lists, "GET", "connections/nobody/lists", headers=MARKETING)
    assert unknown.status_code == 404
    assert {key: asked(account, key) for key in before} == before  # nothing reached the account
    assert account.stats()["lists"] == 1

    # A connection the caller may use, with no tokens: connect it first.
    await put_connection({"display_name": "New", "roles": ["marketing"]}, "fresh")
    fresh = await call(lists, "GET", "connections/fresh/lists", headers=MARKETING)
    assert fresh.status_code == 409
    assert "needs to be reconnected" in response_json(fresh)["error"]


def _definition(**changes: Any) -> dict[str, Any]:
    return {
        "list_ids": ["Newsletter NL"],
        "mapping": {"email": "PrimaryEmail", "cf:tier": "Tier"},
        "connection": "acme",
        "segments": [{"export": "BlobExport", "table": "HighValue"}],
        **changes,
    }


async def test_a_run_starts_with_list_ids_once_its_custom_fields_exist(
    app_env: AppEnv, account: RunningSandbox, durable_fake: DurableFake
) -> None:
    news = account.create_list("Newsletter NL")
    vip = account.create_list("VIP")
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write_later(f"{EXPORT}/model.json")
    put, runs = http_api.export_item, http_api.export_runs
    saved = await call(put, "PUT", "exports/high-value", body=_definition(), headers=MARKETING)
    assert saved.status_code == 201  # a list name is valid; it is looked up when a run starts

    missing = await call(
        runs, "POST", "exports/high-value/runs", durable=durable_fake, headers=MARKETING
    )
    assert missing.status_code == 400
    assert response_json(missing)["error"] == (
        "custom field cf:tier does not exist in the account of connection 'acme' (it has no "
        "custom fields); create it in Constant Contact, or let ccexport create them: "
        '--create-fields, or "create_custom_fields": true in the definition'
    )
    assert durable_fake.starts == []

    creating = _definition(create_custom_fields=True, list_ids=["newsletter nl", vip])
    updated = await call(
        put, "PUT", "exports/high-value", body=creating,
        headers={**MARKETING, "If-Match": saved.headers["ETag"]},
    )  # fmt: skip
    assert updated.status_code == 200
    started = await call(
        runs, "POST", "exports/high-value/runs", durable=durable_fake, headers=MARKETING
    )
    assert started.status_code == 202
    [instance] = durable_fake.starts
    run = RunInput.from_json(instance.input)
    assert run.definition().list_ids == (news, vip)  # the run carries ids
    assert run.definition().create_custom_fields is True
    assert account.stats()["custom_fields"] == 1
    stored = response_json(await call(put, "GET", "exports/high-value"))
    assert stored["list_ids"] == ["newsletter nl", vip]  # the definition keeps the name

    await call(put, "PUT", "exports/other", body=_definition(list_ids=["Newsleter"]))
    unknown = await call(runs, "POST", "exports/other/runs", durable=durable_fake)
    assert unknown.status_code == 400
    assert response_json(unknown)["error"] == (
        "no list named 'Newsleter' in the account of connection 'acme'; close matches: "
        "'Newsletter NL'"
    )
    assert len(durable_fake.starts) == 1


async def test_a_blob_event_starts_nothing_for_an_export_whose_fields_are_missing(
    app_env: AppEnv,
    account: RunningSandbox,
    durable_fake: DurableFake,
    caplog: pytest.LogCaptureFixture,
) -> None:
    news = account.create_list("Newsletter NL")
    async with BlobServiceClient.from_connection_string(app_env.connection_string) as service:
        catalog = Catalog(BlobDocuments(service.get_container_client(app_env.exports)))
        saved_for = {"connection_id": (await catalog.require_connection("acme")).value.id}
        await catalog.save_export(exports.from_json({**_definition(), "name": "typo", **saved_for}))
        await catalog.save_export(
            exports.from_json(
                {**_definition(), "name": "fine", "mapping": {"email": "PrimaryEmail"}, **saved_for}
            )
        )
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write_later(f"{EXPORT}/model.json")
    with caplog.at_level(logging.WARNING, logger="shared.runs.launcher"):
        await blob_event(app_env, durable_fake, f"{EXPORT}/model.json")
    [instance] = durable_fake.starts
    run = RunInput.from_json(instance.input)
    assert (run.definition().name, run.definition().list_ids) == ("fine", (news,))
    warned = [r.getMessage() for r in caplog.records if r.name == "shared.runs.launcher"]
    assert any("export 'typo' not started" in m and "cf:tier does not exist" in m for m in warned)
