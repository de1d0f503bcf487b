"""The blob trigger and the scheduled refresh, called without a host: real binding
objects, the inbox and catalog on Azurite, a real Durable client against a local fake
of the management API."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from functions import triggers
from shared.runs.contract import ORCHESTRATOR, RunInput
from shared.segments.inbox import BlobInfo, RunFolder, run_key
from tests.support.function_harness import (
    HOST_JSON,
    AppEnv,
    DurableFake,
    overridable_states,
    timer_request,
)
from tests.support.trigger_calls import EXPORT, MODEL, RUN, blob_event, definition, seed

pytestmark = pytest.mark.azurite


async def tick(durable: DurableFake, *, past_due: bool = False) -> None:
    handler = triggers.scheduled_refresh.build().get_user_function().client_function
    await handler(timer=timer_request(past_due=past_due), durable=durable.client())


def expected_run_key(export_name: str, container: str, folder: str, etags: list[str]) -> str:
    """The run key by shared/segments/inbox.py's recipe, written out here: the export's name, a
    dot, and the first 32 hex digits of the SHA-256 of "ccexport-run-1", the export's
    name, the container, the folder and the sorted ETags of its parts (without their
    quotes), one a line."""
    unquoted = sorted(etag.strip('"') for etag in etags)
    material = "\n".join(["ccexport-run-1", export_name, container, folder, *unquoted])
    return f"{export_name}.{hashlib.sha256(material.encode()).hexdigest()[:32]}"


def key_now(app_env: AppEnv, export_name: str, folder: str) -> str:
    """The run key of the folder's CSV parts as they are in the inbox now."""
    listing = app_env.container(app_env.inbox).list_blobs(name_starts_with=f"{folder}/")
    etags = [str(b.etag) for b in listing if b.name.endswith(".csv")]
    return expected_run_key(export_name, app_env.inbox, folder, etags)


def test_the_run_key_recipe_is_stable() -> None:
    # Changing it would give every run folder already sent a new key: sent again.
    moment = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    parts = tuple(
        BlobInfo(f"{RUN}/HighValue_{n}.csv", etag, moment)
        for n, etag in ((1, '"0x8DD0A1B2C3D4E60"'), (2, '"0x8DD0A1B2C3D4E5F"'))
    )
    folder = RunFolder("inbox", "", EXPORT, "HighValue", "2026/11/28/0930", parts=parts)
    etags = [p.etag for p in parts]
    assert run_key("high-value", folder) == expected_run_key("high-value", "inbox", RUN, etags)
    assert run_key("high-value", folder) == "high-value.839e289c3e99b7ec2a3a9d030561f2de"
    assert run_key("high-value", folder) != run_key("high-valve", folder)
    elsewhere = RunFolder("inbox2", "", EXPORT, "HighValue", "2026/11/28/0930", parts=parts)
    assert run_key("high-value", elsewhere) != run_key("high-value", folder)


async def test_the_same_event_five_times_starts_one_run(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    await seed(app_env)
    app_env.write(f"{RUN}/HighValue_1.csv", b"id1,a@example.com\n")
    app_env.write(f"{RUN}/HighValue_2.csv", b"id2,b@example.com\n")
    app_env.write_later(MODEL)
    for _ in range(5):
        await blob_event(app_env, durable_fake, MODEL)
    for n in (1, 2):
        await blob_event(app_env, durable_fake, f"{RUN}/HighValue_{n}.csv")
    assert len(durable_fake.starts) == 1
    started = durable_fake.starts[0]
    assert started.name == ORCHESTRATOR
    expected_id = key_now(app_env, "high-value", RUN)
    assert started.instance_id == expected_id
    run = RunInput.from_json(started.input)
    assert run.run_id == expected_id
    assert run.source == f"az://{app_env.inbox}/{RUN}"
    assert (run.connection, run.trigger) == ("acme", "blob")
    assert run.definition().name == "high-value"
    assert "example.com" not in json.dumps(started.input)  # references only, no contact data

    durable_fake.set_status(expected_id, "Completed")
    await blob_event(app_env, durable_fake, MODEL)
    assert len(durable_fake.starts) == 1  # sent already: not again
    durable_fake.set_status(expected_id, "Failed")
    await blob_event(app_env, durable_fake, MODEL)
    assert len(durable_fake.starts) == 2  # a failed run may be started again
    assert durable_fake.starts[1].instance_id == expected_id


async def test_a_folder_with_some_parts_starts_nothing_until_it_is_complete(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    await seed(app_env)
    app_env.write(f"{RUN}/HighValue_1.csv")
    await blob_event(app_env, durable_fake, f"{RUN}/HighValue_1.csv")
    app_env.write(f"{RUN}/HighValue_2.csv")
    await blob_event(app_env, durable_fake, f"{RUN}/HighValue_2.csv")
    assert durable_fake.starts == []  # no model.json, not quiet for 120 s
    app_env.write_later(MODEL)
    await blob_event(app_env, durable_fake, MODEL)
    await blob_event(app_env, durable_fake, f"{RUN}/HighValue_2.csv")  # a late duplicate
    [started] = durable_fake.starts
    assert started.instance_id == key_now(app_env, "high-value", RUN)


async def test_model_json_written_first_waits_for_the_quiet_time(
    app_env: AppEnv, durable_fake: DurableFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(app_env)
    app_env.write(MODEL, b"{}")  # from the previous run, or written first
    await blob_event(app_env, durable_fake, MODEL)
    for n in (1, 2):
        app_env.write(f"{RUN}/HighValue_{n}.csv")
        await blob_event(app_env, durable_fake, f"{RUN}/HighValue_{n}.csv")
    assert durable_fake.starts == []  # the parts are newer than model.json
    monkeypatch.setenv("RUN_QUIET_SECONDS", "0")  # the quiet time has passed
    await blob_event(app_env, durable_fake, f"{RUN}/HighValue_2.csv")
    [started] = durable_fake.starts
    assert started.instance_id == key_now(app_env, "high-value", RUN)


async def test_only_matching_enabled_exports_with_consent_start(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    await seed(
        app_env,
        definition(),
        definition("pattern", segments=[{"export": "Blob*", "table": "high*"}]),
        definition("other-table", segments=[{"export": "BlobExport", "table": "Lapsed"}]),
        definition("disabled", enabled=False),
        definition("no-consent", connection="no-consent"),
        definition("elsewhere", segments=[{"export": "BlobExport", "prefix": "Other/"}]),
    )
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write(f"{RUN}/notes.txt")
    app_env.write_later(MODEL)
    await blob_event(app_env, durable_fake, f"{RUN}/notes.txt")
    assert durable_fake.starts == []  # not part of a run: ignored
    await blob_event(app_env, durable_fake, MODEL)
    started = sorted(
        RunInput.from_json(s.input).definition().name or "" for s in durable_fake.starts
    )
    assert started == ["high-value", "pattern"]


async def test_the_schedule_sends_each_newest_complete_folder_once(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    await seed(app_env, definition(segments=[{"export": "BlobExport"}]))
    older = f"{EXPORT}/HighValue/2026/11/27/0930"
    lapsed = f"{EXPORT}/Lapsed/2026/11/28/0930"
    for path in (older, RUN, lapsed):
        app_env.write(f"{path}/{path.split('/')[2]}_1.csv")
    app_env.write_later(MODEL)
    await tick(durable_fake, past_due=True)
    sources = sorted(RunInput.from_json(s.input).source for s in durable_fake.starts)
    assert sources == [f"az://{app_env.inbox}/{p}" for p in (RUN, lapsed)]
    assert {RunInput.from_json(s.input).trigger for s in durable_fake.starts} == {"timer"}
    await tick(durable_fake)
    assert len(durable_fake.starts) == 2  # running: not again
    for started in durable_fake.starts:
        durable_fake.set_status(started.instance_id, "Completed")
    await tick(durable_fake)
    assert len(durable_fake.starts) == 2  # sent: not again
    newest = f"{EXPORT}/HighValue/2026/11/29/0930"
    app_env.write(f"{newest}/HighValue_1.csv")
    app_env.write_later(MODEL)
    await tick(durable_fake)
    assert len(durable_fake.starts) == 3
    assert RunInput.from_json(durable_fake.starts[2].input).source.endswith(newest)


async def test_the_schedule_resumes_a_run_the_quota_stopped_once_the_quota_reset(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    """Nobody needs to post {"force": true}: after the reset, the next tick starts the
    run again under its own id (and it sends only what was not accepted); before the
    reset, and for a run waiting for confirmation, nothing starts."""
    await seed(app_env)
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write_later(MODEL)
    await tick(durable_fake, past_due=True)
    [first] = durable_fake.starts
    run_id = first.instance_id
    later = {"status": "quota_exhausted", "resume_after": "2999-01-01T00:00:00Z"}
    durable_fake.set_status(run_id, "Completed", output={"run_id": run_id, **later})
    await tick(durable_fake)
    assert len(durable_fake.starts) == 1  # the quota has not reset yet
    asking = {"run_id": run_id, "status": "needs_confirmation", "resume_after": None}
    durable_fake.set_status(run_id, "Completed", output=asking)
    await tick(durable_fake)
    assert len(durable_fake.starts) == 1  # waits for a person
    reset = {"status": "quota_exhausted", "resume_after": "2026-01-01T00:00:00Z"}
    durable_fake.set_status(run_id, "Completed", output={"run_id": run_id, **reset})
    await tick(durable_fake)
    assert [s.instance_id for s in durable_fake.starts] == [run_id, run_id]
    assert RunInput.from_json(durable_fake.starts[1].input).trigger == "timer"


# --- duplicate starts: the host refuses them because host.json says so ---------------------


def test_host_json_makes_a_start_over_a_running_run_fail() -> None:
    # The host setting the trigger relies on when deliveries race (shared/runs/launcher.py).
    assert overridable_states(HOST_JSON) == "NonRunningStates"
    assert DurableFake().refuse_running


async def test_deliveries_racing_start_one_run_and_the_others_are_refused(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    deliveries = 4
    durable_fake.status_barrier = deliveries  # every delivery looks before any starts
    await seed(app_env)
    app_env.write(f"{RUN}/HighValue_1.csv", b"id1,a@example.com\n")
    app_env.write_later(MODEL)

    await asyncio.gather(*(blob_event(app_env, durable_fake, MODEL) for _ in range(deliveries)))

    [started] = durable_fake.starts  # they all found no run; the host let one start
    assert started.instance_id == key_now(app_env, "high-value", RUN)
    assert durable_fake.refused == [started.instance_id] * (deliveries - 1)


async def test_the_fake_starts_over_a_running_instance_when_host_json_allows_it(
    tmp_path: Path,
) -> None:
    for setting, refused in ((None, False), ("AnyState", False), ("NonRunningStates", True)):
        durable_task: dict[str, Any] = {"hubName": "x"}
        if setting is not None:
            durable_task["overridableExistingInstanceStates"] = setting
        host_json = tmp_path / f"host-{setting}.json"
        host_json.write_text(json.dumps({"extensions": {"durableTask": durable_task}}))
        fake = DurableFake(host_json)
        await fake.start()
        try:
            client = fake.client()
            await client.start_new(ORCHESTRATOR, "run-1", {"n": 1})
            fake.set_status("run-1", "Running")
            if refused:
                with pytest.raises(Exception, match="status Running already exists"):
                    await client.start_new(ORCHESTRATOR, "run-1", {"n": 2})
                assert (len(fake.starts), fake.refused) == (1, ["run-1"])
            else:
                await client.start_new(ORCHESTRATOR, "run-1", {"n": 2})
                assert (len(fake.starts), fake.refused) == (2, [])
            fake.set_status("run-1", "Completed")  # a finished run may always be started again
            await client.start_new(ORCHESTRATOR, "run-1", {"n": 3})
            assert fake.instances["run-1"].input == {"n": 3}
        finally:
            await fake.stop()


async def test_the_trigger_logs_a_blob_name_escaped(
    app_env: AppEnv,
    durable_fake: DurableFake,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A blob name with a line break and a fake log prefix is one record, escaped."""
    await seed(app_env, definition(segments=[{"export": "BlobExport"}]))
    forged = f"{EXPORT}/Table\n2026-01-01 ERROR ccexport: forged/2026/11/28/0930/T_1.csv"
    app_env.write(forged)
    monkeypatch.setenv("RUN_QUIET_SECONDS", "0")
    caplog.set_level("INFO", logger="functions.triggers")
    await blob_event(app_env, durable_fake, forged)
    assert len(durable_fake.starts) == 1
    records = [
        r.getMessage()
        for r in caplog.records
        if r.name == "functions.triggers" and "forged" in r.getMessage()
    ]
    assert len(records) == 1, records
    assert "\n" not in records[0]
    assert "\\n2026-01-01 ERROR ccexport: forged" in records[0]
