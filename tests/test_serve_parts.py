"""The parts of ``ccexport serve`` that need no server: finding the app's functions,
routes, sign-in headers, inbox events and the schedule."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func
import pytest

from functions.principal import signed_in_caller
from shared.errors import ConfigError
from shared.workstation.serve.command import parser, prepare_environment
from shared.workstation.serve.events import InboxEvents
from shared.workstation.serve.host import HostError, hosted_app, resolve_setting
from shared.workstation.serve.http import Principal, aiohttp_path
from shared.workstation.serve.schedule import check_schedule, next_fire


def test_every_function_of_the_app_is_found_with_its_bindings() -> None:
    app = hosted_app()
    routes = {(f.route, m) for f in app.http for m in f.methods}
    assert ("exports/{name}/runs", "POST") in routes
    assert ("oauth/callback", "GET") in routes
    by_name = {f.name: f for f in app.http}
    assert by_name["oauth_callback"].anonymous
    assert not by_name["export_item"].anonymous
    assert by_name["export_runs"].client_param == "client"
    assert by_name["exports_list"].client_param is None
    assert [t.name for t in app.timers] == ["scheduled_refresh", "purge_history"]
    assert [b.name for b in app.blobs] == ["segment_blob_created"]
    assert app.route_prefix == "api"
    assert app.durable["maxConcurrentActivityFunctions"] == 8


def test_a_new_function_is_served_and_an_unknown_trigger_stops_start_up() -> None:
    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="items/{id:int}", methods=["GET", "DELETE"])
    @app.durable_client_input(client_name="starter")
    async def item(req: func.HttpRequest, starter: df.DurableOrchestrationClient) -> None:
        del req, starter

    (found,) = hosted_app(app).http
    assert (found.route, found.methods, found.client_param) == (
        "items/{id:int}",
        ("GET", "DELETE"),
        "starter",
    )
    assert aiohttp_path("api", found.route) == "/api/items/{id}"

    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.queue_trigger(arg_name="msg", queue_name="q", connection="C")
    def queued(msg: func.QueueMessage) -> None:
        del msg

    with pytest.raises(HostError, match="serve cannot host a queueTrigger trigger"):
        hosted_app(app)


def test_routes_and_binding_expressions() -> None:
    assert aiohttp_path("api", "runs/{run_id}") == "/api/runs/{run_id}"
    assert aiohttp_path("", "/x/") == "/x"
    with pytest.raises(HostError):
        aiohttp_path("api", "files/{*rest}")
    assert resolve_setting("%INBOX_CONTAINER%/{name}", {"INBOX_CONTAINER": "in"}) == "in/{name}"
    with pytest.raises(HostError, match="needs the setting EXPORT_SCHEDULE"):
        resolve_setting("%EXPORT_SCHEDULE%", {})


def test_the_principal_reads_back_as_the_app_reads_easy_auth(tmp_path: Path) -> None:
    # the settings serve sets, as App Service and the deployment would: the principal
    # it presents is then signed in, of the tenant it set
    env = {"CCEXPORT_HOME": str(tmp_path)}
    prepare_environment(parser().parse_args([]), env)
    ana = Principal("ana", ("marketing", "Sales"))
    caller = signed_in_caller(ana.headers(), env)
    assert caller.roles == frozenset({"marketing", "sales"})
    assert caller.id == ana.object_id == Principal("ana", ()).object_id
    assert caller.id != Principal("bo", ()).object_id
    assert not caller.is_admin
    assert signed_in_caller(Principal("local-admin", ("admin",)).headers(), env).is_admin


class FakeInbox:
    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.raised: list[str] = []

    async def listing(self) -> dict[str, str]:
        return dict(self.files)

    async def on_created(self, name: str) -> None:
        self.raised.append(name)


async def test_a_folder_file_raises_its_event_once_it_stopped_changing() -> None:
    inbox = FakeInbox()
    inbox.files["old/model.json"] = "1"
    events = InboxEvents(inbox.listing, inbox.on_created, interval=0.01, settle=True)
    assert await events.prime() == 1
    inbox.files.update({"E/model.json": "1", "E/T/2026/11/28/0930/T_1.csv": "1"})
    assert await events.poll() == []  # seen once: maybe still being written
    inbox.files["E/T/2026/11/28/0930/T_1.csv"] = "2"  # it was
    assert await events.poll() == ["E/model.json"]
    assert await events.poll() == ["E/T/2026/11/28/0930/T_1.csv"]
    assert await events.poll() == []
    inbox.files["E/model.json"] = "3"  # rewritten: a new event
    await events.poll()
    assert await events.poll() == ["E/model.json"]
    assert inbox.raised == ["E/model.json", "E/T/2026/11/28/0930/T_1.csv", "E/model.json"]


async def test_blob_events_are_raised_at_once_parts_before_model() -> None:
    inbox = FakeInbox()
    events = InboxEvents(inbox.listing, inbox.on_created, interval=0.01, settle=False)
    assert await events.prime() == 0
    inbox.files.update(
        {
            "E/model.json": "a",
            "E/T/2026/11/28/0930/T_2.csv": "b",
            "E/T/2026/11/28/0930/T_1.csv": "c",
        }
    )
    assert await events.poll() == [
        "E/T/2026/11/28/0930/T_1.csv",
        "E/T/2026/11/28/0930/T_2.csv",
        "E/model.json",
    ]
    stop = asyncio.Event()
    stop.set()
    await events.run(stop)  # returns at once when stopped


def test_ncrontab_schedules() -> None:
    at = datetime(2026, 12, 4, 16, 7, 3, tzinfo=UTC)
    assert next_fire("0 */15 * * * *", at) == datetime(2026, 12, 4, 16, 15, tzinfo=UTC)
    assert next_fire("0 0 3 * * *", at) == datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
    assert next_fire("*/5 * * * * *", at) == datetime(2026, 12, 4, 16, 7, 5, tzinfo=UTC)
    assert check_schedule("0 */15 * * * *") == "0 */15 * * * *"
    for bad in ("*/15 * * * *", "every day", "0 0 25 * * *"):
        with pytest.raises(ConfigError, match="not an NCRONTAB expression of six fields"):
            check_schedule(bad)


async def test_a_failed_event_is_tried_again_with_backoff_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from shared.errors import RemoteError  # noqa: PLC0415
    from shared.workstation.serve.events import RETRIES  # noqa: PLC0415

    now = [0.0]
    calls: list[str] = []

    async def flaky(name: str) -> None:
        calls.append(name)
        raise RemoteError("Constant Contact answered 503")

    files = {"E/model.json": "1"}

    async def listing() -> dict[str, str]:
        return dict(files)

    events = InboxEvents(listing, flaky, interval=1.0, settle=False, clock=lambda: now[0])
    await events.prime()
    files["E/T/2026/11/28/0930/T_1.csv"] = "1"
    for _ in range(100):  # 100 s: past every backoff (2 + 4 + 8 + 16 + 32)
        await events.poll()
        now[0] += 1.0
    assert len(calls) == 1 + RETRIES  # retried, with backoff, then given up
    assert "trying again in 2 s" in caplog.text
    assert "failed 6 times; not raised again: 'Constant Contact answered 503'" in caplog.text
    assert "Traceback" not in caplog.text  # an expected error is one line
    files["E/T/2026/11/28/0930/T_1.csv"] = "2"  # a new version is a new event
    await events.poll()
    assert len(calls) == 2 + RETRIES


async def test_a_blob_name_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """A name with a line break and a fake log prefix stays inside one record, escaped,
    and so does an error that quotes it."""
    from shared.errors import InputError  # noqa: PLC0415

    forged = "E/T\n2026-01-01 ERROR ccexport: forged/2026/11/28/0930/T_1.csv"

    async def failing(name: str) -> None:
        raise InputError(f"{name}: not readable")

    files = {forged: "1"}

    async def listing() -> dict[str, str]:
        return dict(files)

    now = [0.0]
    events = InboxEvents(listing, failing, interval=1.0, settle=False, clock=lambda: now[0])
    caplog.set_level("DEBUG", logger="shared.workstation.serve.events")
    await events.poll()
    records = [r for r in caplog.records if "forged" in r.getMessage()]
    assert len(records) == 1
    assert "\n" not in records[0].getMessage()
    assert "T\\n2026-01-01 ERROR" in records[0].getMessage()


async def test_a_copy_that_keeps_old_times_is_not_taken_for_a_finished_folder(
    tmp_path: Path,
) -> None:
    from shared.segments.inbox import FolderInbox, completeness  # noqa: PLC0415

    run = tmp_path / "E" / "T" / "2026" / "11" / "28" / "0930"
    run.mkdir(parents=True)
    (tmp_path / "E" / "model.json").write_text("{}")
    hour_ago = time.time() - 3600
    os.utime(tmp_path / "E" / "model.json", (hour_ago, hour_ago))
    time.sleep(0.02)
    (run / "T_1.csv").write_text("a\n")  # copied later, keeping its source's old time
    os.utime(run / "T_1.csv", (hour_ago - 60, hour_ago - 60))
    (run / ".T_2.csv.partial").write_text("still coming")
    inbox = FolderInbox(tmp_path)
    folder = await inbox.run_folder("E/T/2026/11/28/0930")
    assert folder is not None
    assert [p.name for p in folder.parts] == ["E/T/2026/11/28/0930/T_1.csv"]
    model = await inbox.model("E")
    verdict = completeness(folder, model, datetime.now(UTC), quiet_seconds=120)
    assert not verdict.complete, verdict.reason


def test_serve_refuses_a_host_json_whose_start_rule_it_does_not_follow() -> None:
    import json  # noqa: PLC0415

    from shared.workstation.serve.host import PROJECT_ROOT  # noqa: PLC0415

    host = json.loads((PROJECT_ROOT / "host.json").read_text())
    assert hosted_app(host=host).durable["overridableExistingInstanceStates"] == "NonRunningStates"
    del host["extensions"]["durableTask"]["overridableExistingInstanceStates"]
    with pytest.raises(HostError, match="overridableExistingInstanceStates"):
        hosted_app(host=host)
