"""Every step of a function-app run checks its grant again (shared/runs/recheck.py):
a run stops, with the reason in its report, when its export or connection is
removed, the connection is re-created under the same name, its consent withdrawn,
it needs reconnecting, or the starter's roles no longer reach it; and a connection
added again under a removed one's name takes over none of its exports or runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench.sample import EXPORT, RUN, TABLE, write_sample
from functions import http_api
from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.tokens import mark_needs_reauthorization, tokens_secret
from shared.errors import ConfigError
from shared.exports.access import Caller, connection_of
from shared.exports.catalog import Catalog, Connection, ConnectionStatus
from shared.exports.definitions import ExportDefinition, SegmentMatch
from shared.runs.activities import RunActivities, RunServices
from shared.runs.contract import RunInput, RunOptions, RunStatus
from shared.runs.grants import RunGrant
from shared.runs.recheck import Cleared, RunGate, RunStopped
from shared.secrets.store import LocalFileSecretStore
from shared.wiring import clients
from shared.workstation.local_run import run_locally
from tests.support.ctct_support import FAST
from tests.support.function_harness import AppEnv, DurableFake, response_json
from tests.support.granted_runs import MARKETER, gate_for, granted, home_catalog, save_ready
from tests.support.http_calls import (
    ADMIN,
    DEFINITION,
    MARKETING,
    call,
    consent,
    mark_connected,
    put_connection,
)
from tests.support.http_calls import (
    EXPORT as HTTP_EXPORT,
)
from tests.support.http_calls import (
    RUN as HTTP_RUN,
)
from tests.support.sandbox_service import RunningSandbox, cli_env

SEGMENT = ExportDefinition(
    list_ids=("6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b",),
    mapping={"email": "PrimaryEmail"},
    name="high-value",
    connection="mkt",
    segments=(SegmentMatch(export=EXPORT, table=TABLE),),
)
INBOX = "az://inbox/"
SOURCE = f"{INBOX}{EXPORT}/{TABLE}/{RUN}"

Change = Callable[[Catalog, ExportDefinition, Connection], Awaitable[None]]


async def _delete_export(catalog: Catalog, export: ExportDefinition, _c: Connection) -> None:
    await catalog.delete_export(export.name or "")


async def _move_export(catalog: Catalog, export: ExportDefinition, _c: Connection) -> None:
    stored = await catalog.require_export(export.name or "")
    await catalog.save_export(replace(export, connection="other"), stored.etag)


async def _remove_connection(catalog: Catalog, _e: ExportDefinition, c: Connection) -> None:
    await catalog.delete_connection(c.name)


async def _recreate_connection(catalog: Catalog, export: ExportDefinition, c: Connection) -> None:
    await catalog.delete_connection(c.name)
    await save_ready(catalog, replace(export, name="newer"))  # a new "mkt", and its own export


async def _edit_connection(catalog: Catalog, c: Connection, **changes: Any) -> None:
    stored = await catalog.require_connection(c.name)
    await catalog.save_connection(replace(stored.value, **changes), stored.etag)


async def _withdraw_consent(catalog: Catalog, _e: ExportDefinition, c: Connection) -> None:
    await _edit_connection(catalog, c, consent=None)


async def _disconnect(catalog: Catalog, _e: ExportDefinition, c: Connection) -> None:
    await _edit_connection(catalog, c, status=ConnectionStatus.NOT_CONNECTED)


async def _refresh_refused(catalog: Catalog, _e: ExportDefinition, c: Connection) -> None:
    assert catalog._secrets is not None
    await mark_needs_reauthorization(catalog._secrets, c.name, "invalid_grant")


async def _take_roles(catalog: Catalog, _e: ExportDefinition, c: Connection) -> None:
    await _edit_connection(catalog, c, roles=("sales",))


CHANGES: list[tuple[Change, str]] = [
    (_delete_export, "export 'high-value' was deleted after the run started"),
    (_move_export, "now sends with connection 'other', not 'mkt'"),
    (_remove_connection, "connection 'mkt' was removed after the run started"),
    (_recreate_connection, "was removed and added again after the run started"),
    (_withdraw_consent, "the data-privacy consent of connection 'mkt' was withdrawn"),
    (_disconnect, "connection 'mkt' is not connected to Constant Contact"),
    (_refresh_refused, "connection 'mkt' needs to be reconnected"),
    (_take_roles, "whoever started the run may no longer use connection 'mkt'"),
]


async def ready(tmp_path: Path) -> tuple[Catalog, ExportDefinition, Connection, RunGate]:
    catalog = home_catalog(tmp_path)
    export, connection = await save_ready(catalog, SEGMENT)
    return catalog, export, connection, RunGate(catalog, INBOX)


async def test_a_run_whose_grant_holds_is_cleared(tmp_path: Path) -> None:
    catalog, export, connection, gate = await ready(tmp_path)
    run = granted("r1", export, connection, SOURCE)
    cleared = await gate.check(run.scope)
    stored = await catalog.require_connection("mkt")
    assert cleared == Cleared(stored.etag)
    await _edit_connection(catalog, connection, display_name="Marketing (EU)")
    assert (await gate.check(run.scope)).connection_version != cleared.connection_version


@pytest.mark.parametrize(("change", "reason"), CHANGES, ids=[c.__name__ for c, _ in CHANGES])
async def test_a_change_after_the_start_stops_the_run(
    tmp_path: Path, change: Change, reason: str
) -> None:
    catalog, export, connection, gate = await ready(tmp_path)
    run = granted("r1", export, connection, SOURCE)
    await gate.check(run.scope)
    await change(catalog, export, connection)
    with pytest.raises(RunStopped, match=reason):
        await gate.check(run.scope)


async def test_roles_are_checked_only_for_a_person_who_is_not_an_admin(tmp_path: Path) -> None:
    catalog, export, connection, gate = await ready(tmp_path)
    admin = Caller("oid-admin", frozenset({"admin"}))
    by_admin = granted("r1", export, connection, SOURCE, caller=admin)
    by_event = granted("r2", export, connection, SOURCE, caller=None, trigger="blob")
    by_marketer = granted("r3", export, connection, SOURCE)
    await _take_roles(catalog, export, connection)
    await gate.check(by_admin.scope)
    await gate.check(by_event.scope)
    with pytest.raises(RunStopped, match="may no longer use"):
        await gate.check(by_marketer.scope)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (f"az://reports/{EXPORT}/{TABLE}/{RUN}", "not in the inbox"),
        (f"{INBOX}Other/{TABLE}/{RUN}", "not a run folder of this export's segments"),
    ],
)
async def test_a_source_the_export_does_not_own_stops_the_run(
    tmp_path: Path, source: str, reason: str
) -> None:
    _catalog, export, connection, gate = await ready(tmp_path)
    with pytest.raises(RunStopped, match=reason):
        await gate.check(granted("r1", export, connection, source).scope)


async def test_the_gate_reads_the_segments_from_the_catalog_not_the_run_input(
    tmp_path: Path,
) -> None:
    """A run input that widens its own export's segments is read against the stored ones."""
    _catalog, export, connection, gate = await ready(tmp_path)
    wide = replace(export, segments=(SegmentMatch(export="Other", table=TABLE),))
    with pytest.raises(RunStopped, match="not a run folder"):
        await gate.check(granted("r1", wide, connection, f"{INBOX}Other/{TABLE}/{RUN}").scope)


async def test_a_run_input_without_a_grant_or_with_another_id_is_stopped(tmp_path: Path) -> None:
    _catalog, export, connection, gate = await ready(tmp_path)
    with pytest.raises(RunStopped, match="does not say who started it"):
        await gate.check(None)
    forged = granted("r1", export, replace(connection, id="0" * 16), SOURCE)
    with pytest.raises(RunStopped, match="removed and added again"):
        await gate.check(forged.scope)


async def test_a_connection_added_again_under_the_name_takes_over_no_export(
    tmp_path: Path,
) -> None:
    catalog, export, connection, _gate = await ready(tmp_path)
    assert await connection_of(catalog, export) == connection
    await _recreate_connection(catalog, export, connection)
    stored = await catalog.require_export("high-value")
    assert await connection_of(catalog, stored.value) is None  # only an admin reaches it
    newer = await catalog.require_export("newer")
    assert await connection_of(catalog, newer.value) is not None


# --- over the HTTP API ----------------------------------------------------------------------


async def connected_with_a_run_folder(app_env: AppEnv) -> int:
    """Connection ``acme`` (marketing, consented, connected), a complete run folder,
    and the export ``high-value`` saved over the API; returns the save's status."""
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    await mark_connected(app_env)
    app_env.write(f"{HTTP_RUN}/HighValue_1.csv")
    app_env.write_later(f"{HTTP_EXPORT}/model.json")
    saved = await call(http_api.export_item, "PUT", "exports/high-value", body=DEFINITION)
    return int(saved.status_code)


async def test_a_run_started_over_http_carries_its_grant_and_the_connection_id(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    assert await connected_with_a_run_folder(app_env) == 201
    connection = response_json(await call(http_api.connection_item, "GET", "connections/acme"))
    exported = response_json(await call(http_api.export_item, "GET", "exports/high-value"))
    assert exported["connection_id"] == connection["id"] != ""

    started = await call(
        http_api.export_runs, "POST", "exports/high-value/runs", durable=durable_fake,
        headers=MARKETING,
    )  # fmt: skip
    assert started.status_code == 202
    run = RunInput.from_json(durable_fake.starts[-1].input)
    assert run.grant is not None
    assert run.grant.connection_id == connection["id"]
    assert run.grant.roles == ("marketing",)
    assert not run.grant.admin
    assert run.grant.started_by not in ("", "http")  # the principal's id


async def test_over_http_a_recreated_connection_does_not_inherit_its_exports(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    assert await connected_with_a_run_folder(app_env) == 201
    gone = await call(http_api.connection_item, "DELETE", "connections/acme", headers=ADMIN)
    assert gone.status_code in (200, 204)
    await put_connection({"display_name": "Acme again", "roles": ["marketing"], **consent()})
    await mark_connected(app_env)

    seen = await call(http_api.export_item, "GET", "exports/high-value", headers=MARKETING)
    assert seen.status_code == 403  # the new connection's users do not reach the old export
    listed = response_json(await call(http_api.exports_list, "GET", "exports", headers=MARKETING))
    assert listed["exports"] == []
    started = await call(
        http_api.export_runs, "POST", "exports/high-value/runs", durable=durable_fake
    )
    assert started.status_code == 409
    assert "saved for an earlier connection named 'acme'" in response_json(started)["error"]
    assert durable_fake.starts == []
    resaved = await call(http_api.export_item, "GET", "exports/high-value")  # the admin
    body = {k: v for k, v in response_json(resaved).items() if k != "connection_id"}
    again = await call(
        http_api.export_item, "PUT", "exports/high-value", body=body,
        headers={**ADMIN, "If-Match": resaved.headers["ETag"]},
    )  # fmt: skip
    assert again.status_code == 200
    restarted = await call(
        http_api.export_runs, "POST", "exports/high-value/runs", durable=durable_fake
    )
    assert restarted.status_code == 202


# --- a run in flight -------------------------------------------------------------------------

ROWS = 2_000
OPTIONS = RunOptions(max_body_bytes=12_000, upload_window=1, poll_seconds=0.2, retry_seconds=0.2)


class ChangingMidRun(RunActivities):
    """The run's activities; after the first upload was accepted, ``change`` runs."""

    def __init__(self, services: RunServices, after_first: Callable[[], Awaitable[None]]) -> None:
        super().__init__(services)
        self.after_first = after_first
        self.uploads: list[str] = []

    async def upload_chunk(self, data: Mapping[str, Any]) -> dict[str, Any]:
        result = await super().upload_chunk(data)
        self.uploads.append(result["verdict"])
        if len(self.uploads) == 1:
            await self.after_first()
        return result


def store_tokens(sandbox: RunningSandbox, home: Path, connection: str) -> None:
    bundle = TokenBundle.from_response(sandbox.tokens(), time.time())

    async def store() -> None:
        async with LocalFileSecretStore(home) as secrets:
            await secrets.set(tokens_secret(connection), bundle.to_json())

    asyncio.run(store())


@pytest.mark.parametrize(
    ("change", "reason"),
    [CHANGES[2], CHANGES[3], CHANGES[4]],
    ids=["removed", "recreated", "consent_withdrawn"],
)
def test_a_change_mid_run_stops_sending_within_one_upload_window(
    sandbox: RunningSandbox, tmp_path: Path, change: Change, reason: str
) -> None:
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    write_sample(inbox, ROWS, parts=1, bad_every=0, duplicate_every=0)
    catalog = home_catalog(home)
    list_id = sandbox.create_list(f"recheck-{tmp_path.name}")
    export, connection = asyncio.run(save_ready(catalog, replace(SEGMENT, list_ids=(list_id,))))
    store_tokens(sandbox, home, "mkt")
    env = cli_env(sandbox, home)
    services = replace(clients.run_services_from(env), retry=FAST, gate=gate_for(home, str(inbox)))
    activities = ChangingMidRun(services, lambda: change(catalog, export, connection))
    if change is _recreate_connection:
        activities.after_first = lambda: _recreate_and_connect(sandbox, home, catalog, export)
    source = str(inbox / EXPORT / TABLE / RUN)
    run = granted("high-value.recheck", export, connection, source, options=OPTIONS)
    result = run_locally(run, activities, timeout=60)

    assert activities.uploads[0] == "accepted"
    assert activities.uploads[1:] == ["stopped"]  # the next window sent nothing
    assert result.outcome.status is RunStatus.STOPPED
    report = result.report
    assert report is not None
    assert reason in str(report["error"])
    fates = [c["fate"] for c in report["chunk_outcomes"]]
    assert fates.count("not_sent") == len(fates) - 1 >= 2
    assert len(sandbox.imports(list_id)) == 1  # what the sandbox saw for the list


async def _recreate_and_connect(
    sandbox: RunningSandbox, home: Path, catalog: Catalog, export: ExportDefinition
) -> None:
    """The connection removed and added again, and connected to an account (its own
    tokens): the run in flight must not send with them."""
    await catalog.delete_connection("mkt")
    await save_ready(catalog, replace(export, name="newer"))
    bundle = TokenBundle.from_response(sandbox.tokens(), time.time())
    async with LocalFileSecretStore(home) as secrets:
        await secrets.set(tokens_secret("mkt"), bundle.to_json())


async def test_a_changed_connection_gets_a_new_token_manager(tmp_path: Path) -> None:
    env = {"CCEXPORT_HOME": str(tmp_path), "CTCT_CLIENT_ID": "app", "CTCT_CLIENT_SECRET": "s"}
    activities = RunActivities(clients.run_services_from(env))
    first = await activities._tokens("mkt", '"v1"')
    assert await activities._tokens("mkt", '"v1"') is first
    second = await activities._tokens("mkt", '"v2"')
    assert second is not first
    assert await activities._tokens("mkt", '"v2"') is second
    await activities.aclose()


def test_a_grant_round_trips_and_refuses_what_is_not_one() -> None:
    grant = RunGrant.given("abc", "http", MARKETER)
    assert RunGrant.from_json(grant.to_json()) == grant
    assert grant.started_by == MARKETER.id
    assert grant.roles == ("marketing",)
    assert RunGrant.given("abc", "timer", None).started_by == "timer"
    with pytest.raises(ConfigError, match="grant"):
        RunGrant.from_json("admin")
