"""The HTTP API, each handler called without a host: real ``func.HttpRequest``s, the
catalog and inbox on Azurite, a real Durable client against a local fake of the
management API, and the sandbox's authorize and token endpoints for OAuth."""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import parse_qs, parse_qsl, urlsplit

import aiohttp
import azure.functions as func
import pytest

from functions import http_api
from functions.http_api import connections as connections_module
from functions.http_api import exports as exports_module
from functions.http_api import routes
from shared.constant_contact.tokens import pending_secret, tokens_secret
from shared.errors import RemoteError
from shared.runs.contract import RunInput
from shared.runs.store import BlobRunStore
from shared.secrets.store import LocalFileSecretStore, SecretStoreError
from shared.storage.locks import LockError
from tests.support.function_harness import (
    SYSTEM_KEY,
    AppEnv,
    DurableFake,
    principal,
    response_json,
)
from tests.support.http_calls import (
    ADMIN,
    DEFINITION,
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
from tests.support.services import ROOT

pytestmark = pytest.mark.azurite


def assert_no_durable_key(response: func.HttpResponse) -> None:
    """Nothing in an answer reaches Durable's management API or carries its system key
    (the harness's client binding has one, as the extension's has in Azure)."""
    seen = response.get_body().decode() + repr(dict(response.headers))
    for leak in (SYSTEM_KEY, "code=", "durabletask", "runtime/webhooks", "taskHub"):
        assert leak not in seen, leak


def page_of(response: func.HttpResponse, status: int) -> str:
    """The OAuth callback's page, once its status and the headers that keep the
    callback's address (code and state) out of caches and referrers are checked."""
    assert response.status_code == status, response.get_body()
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
    text = response.get_body().decode()
    assert text.startswith("<!doctype html>")
    return text


def error_of(response: func.HttpResponse, status: int) -> str:
    """An error answer's one sentence, once its status and its shape are checked."""
    assert response.status_code == status, response.get_body()
    body = response_json(response)
    assert isinstance(body, dict), body
    assert list(body) == ["error"], body
    return str(body["error"])


async def test_export_definitions_crud_with_etags_and_validation(app_env: AppEnv) -> None:
    created = await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    assert created.status_code == 201
    assert (
        response_json(created)["privacy_consent"]["accepted_by"] == "the-admin"
    )  # the signed-in admin, not whoever holds the key
    put = http_api.export_item

    bad = await call(put, "PUT", "exports/high-value", body={**DEFINITION, "list_ids": ["\x07"]})
    assert bad.status_code == 400
    assert "is neither a list id (a UUID) nor a list name" in response_json(bad)["error"]
    nothing = await call(put, "GET", "exports/high-value")  # nothing saved
    assert error_of(nothing, 404) == "no export definition named 'high-value'"
    missing = await call(put, "PUT", "exports/high-value", body={**DEFINITION, "connection": "zz"})
    assert missing.status_code == 400
    assert "connection 'zz' does not exist" in response_json(missing)["error"]
    other_name = await call(put, "PUT", "exports/high-value", body={**DEFINITION, "name": "x"})
    assert (
        error_of(other_name, 400) == "export definition: the body names 'x', the URL 'high-value'"
    )
    not_json = await call(put, "PUT", "exports/high-value", body=b"{nope")
    assert response_json(not_json) == {"error": "the body is not valid JSON"}

    saved = await call(put, "PUT", "exports/high-value", body=DEFINITION)
    assert saved.status_code == 201
    etag = saved.headers["ETag"]
    assert response_json(saved)["name"] == "high-value"
    again = await call(put, "PUT", "exports/high-value", body=DEFINITION)
    assert again.status_code == 409
    assert "If-Match" in response_json(again)["error"]
    changed = {**DEFINITION, "description": "gold customers"}
    updated = await call(put, "PUT", "exports/high-value", body=changed, headers={"If-Match": etag})
    assert updated.status_code == 200
    stale = await call(
        put, "PUT", "exports/high-value", body=DEFINITION, headers={"If-Match": etag}
    )
    definition_blob = f"{app_env.exports}/definitions/high-value.json"
    assert error_of(stale, 412) == f"{definition_blob} changed since it was read (or was deleted)"

    got = await call(put, "GET", "exports/high-value")
    assert response_json(got)["description"] == "gold customers"
    assert got.headers["ETag"] == updated.headers["ETag"]
    listed = response_json(await call(http_api.exports_list, "GET", "exports"))
    assert [e["name"] for e in listed["exports"]] == ["high-value"]

    stale_delete = await call(put, "DELETE", "exports/high-value", headers={"If-Match": etag})
    assert error_of(stale_delete, 412) == f"{definition_blob} changed since it was read"
    assert (await call(put, "DELETE", "exports/high-value")).status_code == 204
    assert (
        error_of(await call(put, "GET", "exports/high-value"), 404)
        == "no export definition named 'high-value'"
    )
    assert (
        error_of(await call(put, "DELETE", "exports/high-value"), 404)
        == "no export definition named 'high-value'"
    )


async def test_roles_decide_who_may_use_a_connection(app_env: AppEnv) -> None:
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    await put_connection({"display_name": "Sales", "roles": ["sales"], **consent()}, "sales-cc")
    put = http_api.export_item
    mine = await call(put, "PUT", "exports/mine", body=DEFINITION, headers=MARKETING)
    assert mine.status_code == 201
    theirs = {**DEFINITION, "connection": "sales-cc"}
    refused = await call(put, "PUT", "exports/theirs", body=theirs, headers=MARKETING)
    assert refused.status_code == 403
    assert "sales-cc" in response_json(refused)["error"]
    assert (await call(put, "PUT", "exports/theirs", body=theirs, headers=SALES)).status_code == 201
    # No taking over: pointing someone else's export at your own connection is refused.
    etag = (await call(put, "GET", "exports/theirs", headers=SALES)).headers["ETag"]
    hijack = await call(
        put, "PUT", "exports/theirs", body=DEFINITION, headers={**MARKETING, "If-Match": etag}
    )
    theirs_refused = "export 'theirs': your roles do not allow its connection 'sales-cc'"
    assert error_of(hijack, 403) == theirs_refused
    assert error_of(await call(put, "GET", "exports/theirs", headers=MARKETING), 403) == (
        theirs_refused
    )
    assert error_of(await call(put, "DELETE", "exports/theirs", headers=MARKETING), 403) == (
        theirs_refused
    )
    listed = response_json(await call(http_api.exports_list, "GET", "exports", headers=MARKETING))
    assert [e["name"] for e in listed["exports"]] == ["mine"]
    everything = response_json(await call(http_api.exports_list, "GET", "exports"))
    assert sorted(e["name"] for e in everything["exports"]) == ["mine", "theirs"]

    # Connections: only admins change them; others see those they may use.
    denied = await put_connection({"display_name": "x"}, "new-cc", MARKETING)
    assert denied.status_code == 403
    assert response_json(denied) == {"error": "only an admin may create or change connections"}
    connections = http_api.connection_item
    delete = await call(connections, "DELETE", "connections/acme", headers=MARKETING)
    assert error_of(delete, 403) == "only an admin may delete connections"
    assert (
        await call(connections, "GET", "connections/acme", headers=MARKETING)
    ).status_code == 200
    hidden = await call(connections, "GET", "connections/sales-cc", headers=MARKETING)
    assert error_of(hidden, 404) == "no connection named 'sales-cc'"
    connect = http_api.connection_connect
    not_admin = await call(connect, "GET", "connections/acme", headers=MARKETING)
    assert error_of(not_admin, 403) == "only an admin may connect accounts"
    admin_user = await put_connection({"display_name": "New"}, "new-cc", principal(["Admin"]))
    assert admin_user.status_code == 201
    seen = response_json(await call(http_api.connections_list, "GET", "connections", headers=SALES))
    assert [c["name"] for c in seen["connections"]] == ["sales-cc"]

    nobody = await call(put, "GET", "exports/mine", headers=principal([]))
    assert error_of(nobody, 403) == "export 'mine': your roles do not allow its connection 'acme'"
    forged = await call(put, "GET", "exports/mine", headers={"x-ms-client-principal": "%%%"})
    assert error_of(forged, 401) == "the x-ms-client-principal header is not base64 JSON"


async def test_run_now_status_report_and_list(app_env: AppEnv, durable_fake: DurableFake) -> None:
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    await mark_connected(app_env)
    for n in (1, 2):
        app_env.write(f"{RUN}/HighValue_{n}.csv")
    app_env.write_later(f"{EXPORT}/model.json")
    await call(http_api.export_item, "PUT", "exports/high-value", body=DEFINITION)
    runs = http_api.export_runs

    started = await call(
        runs, "POST", "exports/high-value/runs", durable=durable_fake, headers=MARKETING
    )
    assert started.status_code == 202
    [instance] = durable_fake.starts
    run_id = instance.instance_id
    assert started.headers["Location"] == f"/api/runs/{run_id}"
    assert response_json(started) == {
        "id": run_id,
        "run_id": run_id,
        "outcome": "started",
        "source": f"az://{app_env.inbox}/{RUN}",
        "status_url": f"/api/runs/{run_id}",
    }
    assert_no_durable_key(started)
    assert RunInput.from_json(instance.input).trigger == "http"

    again = await call(runs, "POST", "exports/high-value/runs", durable=durable_fake)
    assert again.status_code == 409
    assert response_json(again)["error"] == f"run {run_id} is already running"
    assert response_json(again)["runs"][0]["status_url"] == f"/api/runs/{run_id}"
    assert_no_durable_key(again)

    status = http_api.run_item
    progress = {"phase": "uploading", "chunks_total": 3, "chunks_uploaded": 1}
    durable_fake.set_status(run_id, "Running", custom_status=progress)
    running = response_json(
        await call(status, "GET", f"runs/{run_id}", durable=durable_fake, headers=MARKETING)
    )
    assert (running["runtime_status"], running["custom_status"]) == ("Running", progress)
    assert running["report"] is None

    report = {"run_id": run_id, "status": "completed", "contacts_delivered": 2}
    BlobRunStore(app_env.service, reports=app_env.reports, staging=app_env.staging).write_report(
        run_id, report
    )
    durable_fake.set_status(run_id, "Completed", output={"status": "completed"})
    done = response_json(await call(status, "GET", f"runs/{run_id}", durable=durable_fake))
    assert done["runtime_status"] == "Completed"
    assert done["report"] == report
    assert done["export"] == "high-value"
    denied = await call(status, "GET", f"runs/{run_id}", durable=durable_fake, headers=SALES)
    assert (
        error_of(denied, 403)
        == "export 'high-value': your roles do not allow its connection 'acme'"
    )
    unknown = await call(status, "GET", "runs/high-value." + "0" * 32, durable=durable_fake)
    assert error_of(unknown, 404) == "no run 'high-value.00000000000000000000000000000000'"

    sent = await call(runs, "POST", "exports/high-value/runs", durable=durable_fake)
    assert sent.status_code == 409
    assert "already sent" in response_json(sent)["error"]
    forced = await call(
        runs, "POST", "exports/high-value/runs", durable=durable_fake, body={"force": True}
    )
    assert forced.status_code == 202
    assert len(durable_fake.starts) == 2

    listed = response_json(
        await call(
            http_api.runs_list, "GET", "runs", durable=durable_fake, params={"export": "high-value"}
        )
    )
    assert [(r["run_id"], r["trigger"]) for r in listed["runs"]] == [(run_id, "http")]
    everyone = response_json(await call(http_api.runs_list, "GET", "runs", durable=durable_fake))
    assert [r["run_id"] for r in everyone["runs"]] == [run_id]
    bad_limit = await call(
        http_api.runs_list, "GET", "runs", durable=durable_fake, params={"limit": "0"}
    )
    assert error_of(bad_limit, 400) == "limit must be a whole number from 1 to 100"

    nowhere = await call(
        runs,
        "POST",
        "exports/high-value/runs",
        durable=durable_fake,
        body={"folder": "No/Such/Run"},
    )
    assert error_of(nowhere, 400) == (
        f"{app_env.inbox}/No/Such/Run: no Customer Insights part files there "
        "(expected <Export>/<Table>/yyyy/MM/dd/HHmm)"
    )
    refused = await call(
        runs, "POST", "exports/high-value/runs", durable=durable_fake, headers=SALES
    )
    assert (
        error_of(refused, 403)
        == "export 'high-value': your roles do not allow its connection 'acme'"
    )
    assert len(durable_fake.starts) == 2


async def test_a_start_of_several_run_folders_links_each_to_its_own_status_route(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    await mark_connected(app_env)
    lapsed = RUN.replace("/HighValue/", "/Lapsed/")
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write(f"{lapsed}/Lapsed_1.csv")
    app_env.write_later(f"{EXPORT}/model.json")
    tables = [{"export": "BlobExport", "table": t} for t in ("HighValue", "Lapsed")]
    body = {**DEFINITION, "segments": tables}
    assert (await call(http_api.export_item, "PUT", "exports/both", body=body)).status_code == 201

    started = await call(http_api.export_runs, "POST", "exports/both/runs", durable=durable_fake)
    assert started.status_code == 202, response_json(started)
    run_ids = [s.instance_id for s in durable_fake.starts]
    assert len(run_ids) == 2
    runs = response_json(started)["runs"]
    assert {r["run_id"]: r["status_url"] for r in runs} == {i: f"/api/runs/{i}" for i in run_ids}
    assert started.headers["Location"] == runs[0]["status_url"]
    assert_no_durable_key(started)


async def test_get_runs_shows_each_caller_the_runs_of_the_exports_they_may_use(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    await put_connection({"display_name": "Sales", "roles": ["sales"], **consent()}, "sales-cc")
    await mark_connected(app_env)
    await mark_connected(app_env, "sales-cc")
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write_later(f"{EXPORT}/model.json")
    connection_of = {"high-value": "acme", "lapsed": "acme", "leads": "sales-cc"}
    run_of: dict[str, str] = {}
    for name, connection in connection_of.items():
        body = {**DEFINITION, "connection": connection}
        assert (
            await call(http_api.export_item, "PUT", f"exports/{name}", body=body)
        ).status_code == 201
        started = await call(
            http_api.export_runs, "POST", f"exports/{name}/runs", durable=durable_fake
        )
        assert started.status_code == 202, response_json(started)
        run_of[name] = response_json(started)["id"]

    async def listed(headers: dict[str, str], **params: str) -> func.HttpResponse:
        return await call(
            http_api.runs_list, "GET", "runs", durable=durable_fake, headers=headers, params=params
        )

    async def run_ids(headers: dict[str, str], **params: str) -> set[str]:
        answer = await listed(headers, **params)
        assert answer.status_code == 200, response_json(answer)
        return {r["run_id"] for r in response_json(answer)["runs"]}

    everything = set(run_of.values())
    assert len(everything) == 3
    # A contributor: exactly the runs of the exports over connections their roles allow.
    assert await run_ids(MARKETING) == {run_of["high-value"], run_of["lapsed"]}
    assert await run_ids(SALES) == {run_of["leads"]}
    assert await run_ids(principal(["marketing", "sales"])) == everything
    assert await run_ids(principal(["support"])) == set()
    # With ?export=: that export's runs, if its connection allows the caller.
    assert await run_ids(MARKETING, export="lapsed") == {run_of["lapsed"]}
    assert await run_ids(SALES, export="leads") == {run_of["leads"]}
    refused = await listed(MARKETING, export="leads")
    assert refused.status_code == 403
    assert response_json(refused) == {
        "error": "export 'leads': your roles do not allow its connection 'sales-cc'"
    }
    nobody = await listed(principal(["support"]), export="high-value")
    assert nobody.status_code == 403
    assert response_json(nobody) == {
        "error": "export 'high-value': your roles do not allow its connection 'acme'"
    }
    # An admin (the function key alone, or the admin role) sees every run.
    assert await run_ids(ADMIN) == await run_ids(principal(["admin"])) == everything
    assert await run_ids(ADMIN, export="leads") == {run_of["leads"]}


async def test_consent_and_connection_state_gate_runs(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    created = await put_connection({"display_name": "Acme", "roles": ["marketing"]})
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write_later(f"{EXPORT}/model.json")
    await call(http_api.export_item, "PUT", "exports/high-value", body=DEFINITION)
    runs = http_api.export_runs

    no_consent = await call(runs, "POST", "exports/high-value/runs", durable=durable_fake)
    assert no_consent.status_code == 409
    assert "data-privacy consent has not been accepted" in response_json(no_consent)["error"]
    accepted = await put_connection(consent(), headers={"If-Match": created.headers["ETag"]})
    assert accepted.status_code == 200
    not_connected = await call(runs, "POST", "exports/high-value/runs", durable=durable_fake)
    assert not_connected.status_code == 409
    assert "not connected" in response_json(not_connected)["error"]
    assert durable_fake.starts == []
    await mark_connected(app_env)
    ok = await call(runs, "POST", "exports/high-value/runs", durable=durable_fake)
    assert ok.status_code == 202
    assert len(durable_fake.starts) == 1


async def test_connect_callback_and_delete(
    app_env: AppEnv, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = await started_connect(sandbox, monkeypatch)
    assert connect.status_code == 302
    authorize = connect.headers["Location"]
    assert authorize.startswith(sandbox.authorize_url)
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == ["https://ccexport-test.azurewebsites.net/api/oauth/callback"]
    state = query["state"][0]

    async with (
        aiohttp.ClientSession() as session,
        session.get(authorize, allow_redirects=False) as approved,
    ):
        back = parse_qs(urlsplit(approved.headers["Location"]).query)
    assert back["state"] == [state]
    code = back["code"][0]

    callback = http_api.oauth_callback
    browser = {"Cookie": browser_cookie(connect)}
    forged = await call(callback, "GET", "oauth/callback", params={"state": "forged", "code": code})
    assert "unknown, expired or already used" in page_of(forged, 400)
    done = await call(
        callback, "GET", "oauth/callback", params={"state": state, "code": code}, headers=browser
    )
    assert "now connected as &#x27;acme&#x27;" in page_of(done, 200)
    replay = await call(
        callback, "GET", "oauth/callback", params={"state": state, "code": code}, headers=browser
    )
    assert "/api/connections/&lt;name&gt;/connect" in page_of(replay, 400)

    store = LocalFileSecretStore(app_env.home)
    tokens = await store.get(tokens_secret("acme"))
    assert tokens is not None
    access_token = json.loads(tokens)["access_token"]
    got = await call(http_api.connection_item, "GET", "connections/acme")
    body = got.get_body().decode()
    assert response_json(got)["status"] == "connected"
    for secret in (access_token, code, state):
        assert secret not in body
        assert secret not in done.get_body().decode()

    etag = got.headers["ETag"]
    await put_connection({"display_name": "Acme 2"}, headers={"If-Match": etag})
    stale = await call(
        http_api.connection_item, "DELETE", "connections/acme", headers={"If-Match": etag}
    )
    assert error_of(stale, 412) == "connection 'acme' changed since it was read"
    assert await store.get(tokens_secret("acme")) is not None
    deleted = await call(http_api.connection_item, "DELETE", "connections/acme")
    assert deleted.status_code == 204
    assert await store.get(tokens_secret("acme")) is None
    assert await store.get(pending_secret("acme")) is None
    gone = await call(http_api.connection_item, "GET", "connections/acme")
    assert error_of(gone, 404) == "no connection named 'acme'"


KEY_VAULT_403 = (
    "Key Vault could not read secret 'ctct-tokens-acme': HTTP 403 Forbidden: Caller is not "
    "authorized. Caller: oid=0d3b1c6e-5f4a-4e2b-9c1d-7a8b9c0d1e2f;tid=5e6f7a8b-1c2d-4e3f-"
    "8a9b-0c1d2e3f4a5b; upn=ops.person@example.com"
)
TENANT = "5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a5b"


def logged_under(caplog: pytest.LogCaptureFixture, ref: str) -> logging.LogRecord:
    """The one log line a correlation id names."""
    [record] = [r for r in caplog.records if ref in r.getMessage()]
    assert "@" not in record.getMessage()
    return record


@pytest.mark.parametrize(
    "case",
    [
        (SecretStoreError(KEY_VAULT_403, status=403), 502, "the secret store did not answer"),
        (
            RemoteError(f"HTTP 500 from Constant Contact: {TENANT} ops.person@example.com"),
            502,
            "Constant Contact did not answer as expected",
        ),
        (LockError(f"lock held by {TENANT}"), 503, "another change holds the lock"),
        (RuntimeError(f"unexpected {TENANT} ops.person@example.com"), 500, "internal error"),
    ],
)
async def test_a_5xx_answers_its_kind_and_a_correlation_id_never_the_error_text(
    app_env: AppEnv,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    case: tuple[Exception, int, str],
) -> None:
    error, status, said = case

    async def failing(*_args: object) -> None:
        raise error

    monkeypatch.setattr(exports_module, "usable_exports", failing)
    with caplog.at_level(logging.WARNING, logger=routes.__name__):
        answer = await call(http_api.exports_list, "GET", "exports")
    assert answer.status_code == status
    body = response_json(answer)
    assert list(body) == ["error", "correlation_id"]
    ref = body["correlation_id"]
    assert re.fullmatch(r"[0-9a-f]{12}", ref)
    assert body["error"].startswith(said)
    assert body["error"].endswith(f"; the function app's log has the details under {ref}")
    assert TENANT not in answer.get_body().decode()
    assert "@" not in answer.get_body().decode()
    record = logged_under(caplog, ref)
    assert record.levelno == logging.ERROR
    assert TENANT in record.getMessage()  # the operator reads the detail in the log
    assert (record.exc_info is not None) == isinstance(error, RuntimeError)
    again = await call(http_api.exports_list, "GET", "exports")
    assert response_json(again)["correlation_id"] != ref


async def test_a_callback_that_fails_in_key_vault_shows_a_reference_not_vault_text(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(*_args: object, **_kwargs: object) -> None:
        raise SecretStoreError(KEY_VAULT_403, status=403)

    monkeypatch.setattr(connections_module, "finish_authorization", failing)
    with caplog.at_level(logging.WARNING, logger=routes.__name__):
        answer = await call(
            http_api.oauth_callback, "GET", "oauth/callback", params={"state": "s", "code": "c"}
        )
    text = page_of(answer, 502)
    assert "the secret store did not answer as expected" in text
    [ref] = re.findall(r"Reference for the administrator: ([0-9a-f]{12})\.", text)
    for quoted in (TENANT, "403", "Forbidden", "@"):
        assert quoted not in text
    assert TENANT in logged_under(caplog, ref).getMessage()


async def test_a_declined_authorization_page_quotes_nothing_constant_contact_sent(
    app_env: AppEnv, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = await started_connect(sandbox, monkeypatch)
    state = parse_qs(urlsplit(connect.headers["Location"]).query)["state"][0]
    sent = {
        "state": state,
        "error": "access_denied",
        "error_description": f"<script>alert(1)</script> tenant {TENANT} ops.person@example.com",
    }
    browser = {"Cookie": browser_cookie(connect)}
    declined = await call(
        http_api.oauth_callback, "GET", "oauth/callback", params=sent, headers=browser
    )
    text = page_of(declined, 400)
    assert "Constant Contact sent the browser back without granting access" in text
    for quoted in ("access_denied", "<script>", TENANT, "@", state):
        assert quoted not in text
    again = await call(
        http_api.oauth_callback,
        "GET",
        "oauth/callback",
        params={"state": state, "code": "x"},
        headers=browser,
    )
    assert "unknown, expired or already used" in page_of(again, 400)


def test_the_app_s_own_links_are_under_host_json_s_route_prefix() -> None:
    host = json.loads((ROOT / "host.json").read_text("utf-8"))
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    assert routes.app_path("runs/x.1") == f"/{prefix}/runs/x.1"


async def started_connect(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> func.HttpResponse:
    """The connection ``acme`` (consent given) and the admin's connect answer, against
    the sandbox's authorize page."""
    for name, value in sandbox.ctct_settings().items():
        monkeypatch.setenv(name, value)
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    return await call(http_api.connection_connect, "GET", "connections/acme/connect")


def browser_cookie(connect: func.HttpResponse) -> str:
    """The cookie the connect answer sets, as the browser sends it back (name=value)."""
    cookie = str(connect.headers["Set-Cookie"])
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[1:] == [
        "Path=/api/oauth/callback",
        "Max-Age=600",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
    ]
    return attributes[0]


async def test_an_authorization_finished_in_another_browser_connects_nothing(
    app_env: AppEnv, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state is bound to the starting admin's browser: a callback without its key
    (someone the link was passed to) is refused, and spends the state."""
    connect = await started_connect(sandbox, monkeypatch)
    async with (
        aiohttp.ClientSession() as session,
        session.get(connect.headers["Location"], allow_redirects=False) as approved,
    ):
        sent = dict(parse_qsl(urlsplit(approved.headers["Location"]).query))
    callback = http_api.oauth_callback
    for other in ({}, {"Cookie": "ccexport_connect=not-the-key"}):
        elsewhere = await call(callback, "GET", "oauth/callback", params=sent, headers=other)
        assert "started in another browser" in page_of(elsewhere, 400) or (
            "unknown, expired or already used" in page_of(elsewhere, 400)
        )
    late = await call(
        callback, "GET", "oauth/callback", params=sent, headers={"Cookie": browser_cookie(connect)}
    )
    assert "unknown, expired or already used" in page_of(late, 400)  # spent by the refusal
    status = await call(http_api.connection_item, "GET", "connections/acme")
    assert response_json(status)["status"] == "not_connected"
