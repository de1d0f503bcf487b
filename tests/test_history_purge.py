"""The daily purge of ended runs' Durable history: what it takes (shared/runs/retention.py),
the timer that asks for it (functions/triggers.py, called without a host against the
Durable management API's fake), and ``ccexport serve``'s local engine answering the
same request."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest
from aiohttp import web
from azure.durable_functions.models.utils import http_utils

from functions import triggers
from shared.errors import ConfigError
from shared.runs import retention
from shared.workstation.local_engine import LocalEngine, RuntimeStatus
from shared.workstation.serve.durable import DurableApi
from shared.workstation.serve.schedule import check_schedule
from tests.support.function_harness import DurableFake, Instance, timer_request

NOW = datetime(2026, 11, 28, 4, 30, tzinfo=UTC)


def test_the_history_kept_is_a_setting_of_whole_days() -> None:
    assert retention.history_days({}) == retention.DEFAULT_HISTORY_DAYS == 30
    assert retention.history_days({"DURABLE_HISTORY_DAYS": " 45 "}) == 45
    for bad in ("0", "-3", "1.5", "a month"):
        with pytest.raises(ConfigError, match="DURABLE_HISTORY_DAYS"):
            retention.history_days({"DURABLE_HISTORY_DAYS": bad})


def test_the_purge_takes_ended_runs_created_before_the_cutoff() -> None:
    window = retention.purge_window({"DURABLE_HISTORY_DAYS": "30"}, NOW)
    assert window.before == NOW - timedelta(days=30)
    assert window.since == retention.BEGINNING < window.before
    assert window.days == 30
    assert retention.ENDED == ("Completed", "Failed", "Terminated")
    with pytest.raises(ValueError, match="timezone"):
        retention.purge_window({}, NOW.replace(tzinfo=None))
    check_schedule(retention.PURGE_SCHEDULE)  # six NCRONTAB fields, as the host wants


def _instance(instance_id: str, status: str, age: timedelta) -> Instance:
    return Instance(
        "segment_export",
        instance_id,
        None,
        runtime_status=status,
        created=(datetime.now(UTC) - age).isoformat(),
    )


async def purge(durable: df.DurableOrchestrationClient) -> None:
    handler = triggers.purge_history.build().get_user_function().client_function
    await handler(timer=timer_request(), durable=durable)


async def test_the_timer_purges_ended_runs_older_than_the_setting(
    durable_fake: DurableFake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DURABLE_HISTORY_DAYS", "10")
    old, young = timedelta(days=11), timedelta(days=9)
    for instance in (
        _instance("old.completed", "Completed", old),
        _instance("old.failed", "Failed", old),
        _instance("old.terminated", "Terminated", old),
        _instance("old.running", "Running", old),  # a run still going keeps its history
        _instance("old.pending", "Pending", old),
        _instance("young.completed", "Completed", young),
    ):
        durable_fake.instances[instance.instance_id] = instance
    caplog.set_level("INFO", logger="functions.triggers")

    await purge(durable_fake.client())

    assert sorted(durable_fake.instances) == ["old.pending", "old.running", "young.completed"]
    (asked,) = durable_fake.purges
    assert asked["runtimeStatus"] == "Completed,Failed,Terminated"
    assert asked["createdTimeFrom"].startswith("2000-01-01T00:00:00")
    cutoff = datetime.fromisoformat(asked["createdTimeTo"].replace("Z", "+00:00"))
    assert abs(cutoff - (datetime.now(UTC) - timedelta(days=10))) < timedelta(minutes=1)
    assert "3 ended runs created before" in caplog.text
    assert "(older than 10 days)" in caplog.text


async def test_a_bad_setting_fails_the_timer_and_purges_nothing(
    durable_fake: DurableFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLE_HISTORY_DAYS", "0")
    durable_fake.instances["old"] = _instance("old", "Completed", timedelta(days=400))
    with pytest.raises(ConfigError):
        await purge(durable_fake.client())
    assert durable_fake.purges == []
    assert "old" in durable_fake.instances


# --- ccexport serve's engine answers the same request -------------------------------------


def done(context: Any) -> Generator[Any, Any, str]:
    yield context.call_activity("wait", 0)
    return "done"


@pytest.fixture
def engine() -> Iterator[tuple[LocalEngine, threading.Event]]:
    release = threading.Event()
    with LocalEngine(activity_concurrency=2) as local:
        local.register_orchestrator("done", done)
        local.register_activity("wait", lambda _: release.wait(10) and None)
        try:
            yield local, release
        finally:
            release.set()


async def test_serve_purges_ended_instances_of_its_own_engine(
    engine: tuple[LocalEngine, threading.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    local, release = engine
    api = DurableApi(local)
    web_app = web.Application()
    web_app.add_routes(list(api.routes()))
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        api.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        client = df.DurableOrchestrationClient(api.binding_json())
        local.start("done", instance_id="running")
        release.set()
        assert local.wait("running", timeout=20).status is RuntimeStatus.COMPLETED
        release.clear()
        local.start("done", instance_id="still.running")

        # The timer, as serve fires it: nothing here is 30 days old, nothing goes.
        monkeypatch.delenv("DURABLE_HISTORY_DAYS", raising=False)
        await purge(client)
        assert local.status("running") is not None

        # The same request with a cutoff after both starts: only the ended one goes.
        ended = [df.OrchestrationRuntimeStatus(s) for s in retention.ENDED]
        result = await client.purge_instance_history_by(
            created_time_from=retention.BEGINNING,
            created_time_to=datetime.now(UTC) + timedelta(minutes=1),
            runtime_status=ended,
        )
        assert result.instances_deleted == 1
        assert local.status("running") is None
        assert local.status("still.running") is not None
    finally:
        release.set()
        await http_utils._close_session()
        await runner.cleanup()
