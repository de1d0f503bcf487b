"""Nobody in who does not belong, and nothing secret or personal where it should not be.

What the Functions host enforces, and what the app does. Every HTTP function is
declared with auth level FUNCTION except the OAuth callback (a browser arrives there
from Constant Contact, without a key; its state and PKCE verifier guard it). The host
checks the key (``code`` in the query or the ``x-functions-key`` header, against the
function's or the host's keys) and answers 401 before the Python worker sees the
request, so no handler can run keyless; there is no host here (Core Tools cannot be
installed offline), so the tests check the declaration the host reads, and what the
app enforces itself: roles from ``x-ms-client-principal`` (functions/principal.py).

Checked elsewhere, and counted in the figures (``REFERENCED`` is checked to exist):
roles over connections and exports, consent and connection gates on runs and
triggers, the OAuth connect flow with forged and replayed state, deleting a connection
with tokens in the file store, private containers in infra, rejects.csv neutralising
formulas, tokens and secrets out of logs in the token and secret layers, sign-in
(no principal, another tenant, headers where authentication is off), runs stopped
mid-way when their connection is removed, re-created or loses its consent, bounded
input, and links to other hosts. Here: the keyless-function declaration, a stranger
(wrong roles, a forged header, nobody signed in, another tenant) against every
endpoint, the deletion of a connection's tokens from Key Vault (purged, not only
soft-deleted), a forged callback carrying a code obtained for another PKCE challenge,
and runs started through Durable's own API with forged inputs. The log scan over a
whole run with faults and the personal-data check are in test_keyvault.py.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from bench.sample import EXPORT as SAMPLE_EXPORT
from bench.sample import RUN as SAMPLE_RUN
from bench.sample import TABLE, write_sample
from functions import http_api
from shared.constant_contact.tokens import pending_secret, status_secret, tokens_secret
from shared.exports.definitions import ExportDefinition, SegmentMatch
from shared.runs.activities import RunActivities
from shared.runs.contract import RunStatus
from shared.secrets.keyvault import KeyVaultSecretStore
from shared.secrets.opening import open_secret_store
from shared.secrets.store import LocalFileSecretStore
from shared.wiring import clients as wiring_clients
from shared.workstation.local_run import run_locally
from tests.chaos.figures import FIGURES
from tests.chaos.promises import services_for, store_tokens
from tests.support.app_index import http_triggers
from tests.support.function_harness import (
    AppEnv,
    DurableFake,
    http_request,
    principal,
    response_json,
)
from tests.support.granted_runs import gate_for, granted, home_catalog, save_ready
from tests.support.http_calls import (
    DEFINITION,
    EXPORT,
    RUN,
    call,
    consent,
    mark_connected,
    put_connection,
)
from tests.support.keyvault_fake import CLOUD_IDENTITY_VARS, KeyVaultFake
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.services import ROOT

pytestmark = pytest.mark.azurite

REFERENCED = (
    "tests/test_http_api.py::test_roles_decide_who_may_use_a_connection",
    "tests/test_http_api.py::test_run_now_status_report_and_list",
    "tests/test_http_api.py::test_consent_and_connection_state_gate_runs",
    "tests/test_http_api.py::test_connect_callback_and_delete",
    "tests/test_triggers.py::test_only_matching_enabled_exports_with_consent_start",
    "tests/test_triggers.py::test_the_same_event_five_times_starts_one_run",
    "tests/test_tokens.py::test_forged_state_is_refused_and_the_real_one_still_completes",
    "tests/test_tokens.py::test_connect_stores_one_bundle_and_its_state_is_single_use",
    "tests/test_tokens.py::test_no_token_secret_code_or_email_in_any_log_line",
    "tests/test_secrets.py::test_no_secret_or_token_in_any_log_line_or_error",
    "tests/test_infra.py::test_containers_are_private_and_match_the_contract",
    "tests/test_infra.py::test_storage_is_identity_only_https_tls12_and_private",
    "tests/test_prepare.py::test_rejects_neutralise_spreadsheet_formulas",
    "tests/test_sign_in.py::test_behind_authentication_a_request_without_a_principal_is_refused",
    "tests/test_sign_in.py::test_only_a_principal_of_the_deployments_tenant_is_signed_in",
    "tests/test_sign_in.py::test_without_authentication_principal_headers_are_never_read",
    "tests/test_sign_in.py::test_with_authentication_off_a_forged_admin_gets_nothing",
    "tests/test_run_recheck.py::test_a_change_after_the_start_stops_the_run",
    "tests/test_run_recheck.py::test_a_change_mid_run_stops_sending_within_one_upload_window",
    "tests/test_run_recheck.py::test_over_http_a_recreated_connection_does_not_inherit_its_exports",
    "tests/test_run_recheck.py::test_a_changed_connection_gets_a_new_token_manager",
    "tests/test_run_source.py::test_the_prepare_activity_stops_a_run_whose_source_is_not_its_own",
    "tests/test_bounded_input.py::test_a_gzip_of_64_mb_without_a_line_break_is_refused_fast_in_little_memory",
    "tests/test_constant_contact_links.py::test_a_next_link_to_another_host_is_refused_before_any_request",
)
STRANGERS = {
    "a role no connection allows": principal(["intruder"]),
    "no roles at all": principal([]),
    "a forged principal header": {"x-ms-client-principal": "%%%not-base64"},
    "nobody signed in": {},
    "an admin of another tenant": principal(["admin"], tenant="another-tenant"),
    "an admin naming no tenant": principal(["admin"], tenant=None),
}


def test_the_referenced_tests_exist() -> None:
    # Read, not imported: no test module imports another (tests/test_test_layout.py).
    for reference in REFERENCED:
        path, _, name = reference.partition("::")
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        tests = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert name in tests, f"{reference} is gone"
    FIGURES.covered_elsewhere[:] = list(REFERENCED)


def test_every_endpoint_but_the_oauth_callback_needs_the_function_key() -> None:
    triggers = http_triggers()
    levels = {name: str(trigger["authLevel"]) for name, trigger in triggers.items()}
    console = {name for name, t in triggers.items() if str(t["route"]).startswith("console")}
    assert len(levels) >= 9
    keyless = {name for name, level in levels.items() if level.lower() != "function"}
    # The console's pages: a browser has no key; they answer only behind App Service
    # authentication, to a signed-in caller (tests/test_console_safety.py).
    assert keyless - console == {"oauth_callback"}, f"keyless HTTP functions: {sorted(keyless)}"
    FIGURES.security(
        "every HTTP function but the OAuth callback and the console declares auth level FUNCTION"
    )


async def test_a_stranger_gets_nothing_from_any_endpoint(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    created = await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    await mark_connected(app_env)
    app_env.write(f"{RUN}/HighValue_1.csv", b"id1,a@example.com\n")
    app_env.write_later(f"{EXPORT}/model.json")
    saved = await call(http_api.export_item, "PUT", "exports/high-value", body=DEFINITION)
    started = await call(http_api.export_runs, "POST", "exports/high-value/runs",
                         durable=durable_fake)  # fmt: skip
    assert (created.status_code, saved.status_code, started.status_code) == (201, 201, 202)
    run_id = response_json(started)["id"]
    durable_fake.set_status(run_id, "Running")
    tries: list[tuple[Any, str, str, dict[str, Any]]] = [
        (http_api.exports_list, "GET", "exports", {}),
        (http_api.export_item, "GET", "exports/high-value", {}),
        (http_api.export_item, "PUT", "exports/high-value",
         {"body": {**DEFINITION, "description": "taken over"}}),
        (http_api.export_item, "PUT", "exports/mine", {"body": DEFINITION}),
        (http_api.export_item, "DELETE", "exports/high-value", {}),
        (http_api.export_runs, "POST", "exports/high-value/runs", {"body": {"force": True}}),
        (http_api.runs_list, "GET", "runs", {}),
        (http_api.runs_list, "GET", "runs", {"params": {"export": "high-value"}}),
        (http_api.run_item, "GET", f"runs/{run_id}", {}),
        (http_api.connections_list, "GET", "connections", {}),
        (http_api.connection_item, "GET", "connections/acme", {}),
        (http_api.connection_item, "PUT", "connections/acme",
         {"body": {"roles": ["intruder"], **consent()}}),
        (http_api.connection_item, "PUT", "connections/mine", {"body": {"display_name": "x"}}),
        (http_api.connection_item, "DELETE", "connections/acme", {}),
        (http_api.connection_connect, "GET", "connections/acme/connect", {}),
        (http_api.connection_lists, "GET", "connections/acme/lists", {}),
        (http_api.connection_lists, "POST", "connections/acme/lists", {"body": {"name": "x"}}),
        (http_api.connection_custom_fields, "GET", "connections/acme/custom_fields", {}),
        (http_api.key_usage, "GET", "usage", {}),
    ]  # fmt: skip
    durable = {http_api.export_runs, http_api.runs_list, http_api.run_item}
    for who, headers in STRANGERS.items():
        for handler, method, path, request in tries:
            answer = await call(
                handler, method, path, headers=headers,
                durable=durable_fake if handler in durable else None, **request,
            )  # fmt: skip
            where = f"{who}: {method} {path}"
            if answer.status_code == 200:  # a listing: of nothing
                assert method == "GET", where
                lists = [v for v in response_json(answer).values() if isinstance(v, list)]
                assert lists, f"{where}: 200 with something other than a listing"
                assert all(v == [] for v in lists), where
            else:
                assert answer.status_code in {401, 403, 404}, f"{where}: {answer.status_code}"
            FIGURES.security(f"stranger ({who}) refused: {method} {path}")
    # nothing changed, nothing started
    after_export = await call(http_api.export_item, "GET", "exports/high-value")
    after_connection = await call(http_api.connection_item, "GET", "connections/acme")
    assert after_export.headers["ETag"] == saved.headers["ETag"]
    assert response_json(after_connection)["roles"] == ["marketing"]
    assert (await call(http_api.export_item, "GET", "exports/mine")).status_code == 404
    assert (await call(http_api.connection_item, "GET", "connections/mine")).status_code == 404
    assert len(durable_fake.starts) == 1


@pytest.fixture
def vault_app(
    app_env: AppEnv, keyvault: KeyVaultFake, monkeypatch: pytest.MonkeyPatch
) -> KeyVaultFake:
    """The function app's secrets in the Key Vault fake, through its managed identity."""
    for var in CLOUD_IDENTITY_VARS:
        monkeypatch.delenv(var, raising=False)
    for key, value in {**keyvault.identity_env(), "KEY_VAULT_URL": keyvault.url}.items():
        monkeypatch.setenv(key, value)
    opened = partial(
        open_secret_store, verify_challenge_resource=False, connection_verify=str(keyvault.ca_path)
    )
    monkeypatch.setattr(wiring_clients, "open_secret_store", opened)
    return keyvault


async def test_deleting_a_connection_purges_its_tokens_from_key_vault(
    vault_app: KeyVaultFake, sandbox: RunningSandbox
) -> None:
    keyvault = vault_app
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    tokens = json.dumps(sandbox.tokens())
    async with KeyVaultSecretStore(
        keyvault.url, keyvault.credential(), verify_challenge_resource=False,
        connection_verify=str(keyvault.ca_path),
    ) as store:  # fmt: skip
        await store.set(tokens_secret("acme"), tokens)
        await store.set(status_secret("acme"), '{"reason": "test"}')
        await store.set(pending_secret("acme"), '{"verifier": "v"}')
        refused = await call(http_api.connection_item, "DELETE", "connections/acme",
                             headers=principal(["marketing"]))  # fmt: skip
        assert refused.status_code == 403
        assert await store.get(tokens_secret("acme")) == tokens
        deleted = await call(http_api.connection_item, "DELETE", "connections/acme")
        assert deleted.status_code == 204
        for name in (tokens_secret("acme"), status_secret("acme"), pending_secret("acme")):
            assert await store.get(name) is None
    assert tokens not in keyvault.stored_values(), "purged, not only soft-deleted"
    assert all("acme" not in v for v in keyvault.stored_values())
    FIGURES.security("deleting a connection purges its tokens from Key Vault")


async def test_a_callback_with_a_code_for_another_pkce_challenge_stores_nothing(
    app_env: AppEnv, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code injection: the victim's state with a code the attacker got for their own
    challenge, delivered through the victim's own browser (its key in the cookie). The
    state and the browser are genuine, so only PKCE can stop it, and does."""
    for name, value in sandbox.ctct_settings().items():
        monkeypatch.setenv(name, value)
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    connect = await call(http_api.connection_connect, "GET", "connections/acme/connect")
    assert connect.status_code == 302
    authorize = urlsplit(connect.headers["Location"])
    query = parse_qs(authorize.query)
    state = query["state"][0]
    attacker = {k: v[0] for k, v in query.items()}
    attacker.update(state="attackers-own-state",
                    code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")  # fmt: skip
    attacker_url = urlunsplit(authorize._replace(query=urlencode(attacker)))

    async with (
        aiohttp.ClientSession() as session,
        session.get(attacker_url, allow_redirects=False) as approved,
    ):
        stolen = parse_qs(urlsplit(approved.headers["Location"]).query)["code"][0]
    victims_browser = {"Cookie": connect.headers["Set-Cookie"].split(";")[0]}
    forged = await call(http_api.oauth_callback, "GET", "oauth/callback",
                        params={"state": state, "code": stolen},
                        headers=victims_browser)  # fmt: skip
    assert forged.status_code == 400
    body = forged.get_body().decode()
    assert stolen not in body
    assert state not in body
    got = response_json(await call(http_api.connection_item, "GET", "connections/acme"))
    assert got["status"] != "connected"
    secrets_dir = Path(app_env.home) / "secrets"
    stored = [p.read_text() for p in secrets_dir.rglob("*") if p.is_file()]
    assert not any("access_token" in text for text in stored)
    FIGURES.security("a callback with the right state and a code for another PKCE challenge")


FORGED_RUNS = {
    "no grant (as the command line makes it)": "does not say who started it",
    "a grant naming another connection id": "removed and added again",
    "a source in another container": "not in the inbox",
    "an export widened in the input to another team's folder": "not a run folder",
}


@pytest.mark.parametrize("forgery", sorted(FORGED_RUNS))
def test_a_run_started_with_a_forged_input_sends_nothing(
    sandbox: RunningSandbox, tmp_path: Path, forgery: str
) -> None:
    """Whoever reaches Durable's own API and starts ``segment_export`` with an input of
    their making: the app's activities check it against the catalog and stop the run
    before reading or sending anything."""
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    write_sample(inbox, 300, parts=1, bad_every=0, duplicate_every=0)
    write_sample(tmp_path / "elsewhere", 300, parts=1, bad_every=0, duplicate_every=0)
    list_id = sandbox.create_list(f"forged-{tmp_path.name}")
    segment = ExportDefinition(
        list_ids=(list_id,), mapping={"email": "PrimaryEmail"}, name="high-value",
        connection="mkt", segments=(SegmentMatch(export=SAMPLE_EXPORT, table=TABLE),),
    )  # fmt: skip
    export, connection = asyncio.run(save_ready(home_catalog(home), segment))
    store_tokens(sandbox, LocalFileSecretStore(home), "mkt")
    source = str(inbox / SAMPLE_EXPORT / TABLE / SAMPLE_RUN)
    run = granted("high-value.forged", export, connection, source)
    if forgery.startswith("no grant"):
        run = replace(run, grant=None)
    elif forgery.startswith("a grant naming"):
        assert run.grant is not None
        run = replace(run, grant=replace(run.grant, connection_id="0123456789abcdef"))
    elif forgery.startswith("a source"):
        run = replace(run, source=str(tmp_path / "elsewhere" / SAMPLE_EXPORT / TABLE / SAMPLE_RUN))
    else:
        shutil.copytree(inbox / SAMPLE_EXPORT, inbox / "Other")  # another team's export
        wide = replace(export, segments=(SegmentMatch(export="Other", table=TABLE),))
        run = replace(run, export=wide.to_json(), source=str(inbox / "Other" / TABLE / SAMPLE_RUN))
    services = replace(services_for(cli_env(sandbox, home)), gate=gate_for(home, str(inbox)))

    result = run_locally(run, RunActivities(services), timeout=60)

    assert result.outcome.status is RunStatus.FAILED
    assert result.report is not None
    assert FORGED_RUNS[forgery] in str(result.report["error"])
    assert result.report["counts"]["rows_read"] == 0
    assert sandbox.imports(list_id) == []
    FIGURES.security(f"a forged run input is stopped before it reads or sends: {forgery}")


def console_pages() -> list[tuple[Any, str, list[str]]]:
    """Every console page's function builder, its route and its methods."""
    from functions import console  # noqa: PLC0415 - the app's own pages

    found = []
    for module in (console.home, console.connections, console.exports, console.runs):
        for value in vars(module).values():
            if hasattr(value, "build") and hasattr(value, "_function"):
                trigger = value._function.get_trigger().get_dict_repr()
                methods = [str(getattr(m, "value", m)) for m in trigger["methods"]]
                found.append((value, str(trigger["route"]), methods))
    return found


async def test_nobody_signed_in_and_another_tenant_get_no_console_page(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    """Every console page, every method, with every route parameter filled: a request
    nobody signed in or an admin of another tenant sends is refused (401) before the
    page looks at anything."""
    pages = console_pages()
    assert len(pages) >= 12
    strangers = {"nobody signed in": {}, "another tenant": principal(["admin"], tenant="x")}
    for builder, route, methods in pages:
        params = {p: "high-value.0123456789abcdef0123456789abcdef" if p == "run_id" else "acme"
                  for p in re.findall(r"{(\w+)", route)}  # fmt: skip
        path = route
        for name, value in params.items():
            path = re.sub(r"{" + name + r"(:[^}]*)?}", value, path)
        user = builder.build().get_user_function()
        for who, headers in strangers.items():
            for method in methods:
                req = http_request(method, path, route_params=params, headers=headers)
                if getattr(user, "client_function", None) is not None:
                    answer = await user.client_function(req=req, client=durable_fake.client())
                else:
                    answer = await user(req=req)
                assert answer.status_code == 401, f"{who}: {method} {path}"
                assert b"Traceback" not in answer.get_body()
                FIGURES.security(f"console refuses {who}: {method} {path}")
