"""Export runs end to end: the function app's orchestrator and activities on the local
Durable Task engine, a Customer Insights segment in Azurite, the Constant Contact
sandbox, and the sandbox's list checked against the segment contact by contact.

Small exports (2,000 rows, bodies of at most 40 kB) so each run makes several chunks
and takes a few seconds; polls every 0.2 s.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from bench.sample import EXPORT, RUN, TABLE
from functions import activities as bindings
from shared.constant_contact.pacing import Pacer
from shared.runs.activities import RunActivities
from shared.runs.contract import RunStatus
from shared.runs.store import BlobRunStore, LocalRunStore
from shared.workstation.local_run import run_locally
from tests.support.ctct_support import run_cli
from tests.support.export_runs import (
    BODY_BYTES,
    OPTIONS,
    ROWS,
    TIMEOUT,
    connect,
    env_for,
    imports_accepted,
    run_input,
    services_for,
    write_export_sample,
)
from tests.support.sample_emails import expected_emails
from tests.support.sandbox_service import RunningSandbox


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    write_export_sample(out)
    return out


@pytest.fixture(scope="module")
def inbox(azurite: str, sample: Path) -> str:
    """The sample uploaded to Azurite's inbox container; returns its run folder as az://."""
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.get_container_client("inbox")
    if not container.exists():
        container.create_container()
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    for path in sorted((sample / EXPORT).rglob("*")):
        if path.is_file():
            name = f"{prefix}/{path.relative_to(sample).as_posix()}"
            container.upload_blob(name, path.read_bytes(), overwrite=True)
    return f"az://inbox/{prefix}/{EXPORT}/{TABLE}/{RUN}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


# --- in process, on the local engine ------------------------------------------------------


def test_a_segment_in_blob_storage_lands_in_the_list_exactly(
    sandbox: RunningSandbox, azurite: str, inbox: str, sample: Path, home: Path
) -> None:
    list_id = sandbox.create_list()
    connect(sandbox, home)
    services = services_for(env_for(sandbox, home, azurite))
    assert isinstance(services.runs, BlobRunStore)
    run = run_input(inbox, list_id)
    seen: list[dict[str, Any]] = []

    result = run_locally(run, RunActivities(services), timeout=TIMEOUT, on_progress=seen.append)

    expected = expected_emails(sample)
    assert len(expected) == ROWS - 20 - 19  # 20 broken addresses, 19 duplicates
    assert sorted(sandbox.members(list_id)) == sorted(expected)
    assert result.outcome.status is RunStatus.COMPLETED
    assert result.outcome.contacts_delivered == len(expected)
    report = result.report
    assert report is not None
    counts = report["counts"]
    assert counts["rows_read"] == ROWS
    assert counts["contacts"] == counts["contacts_delivered"] == counts["person_count"]
    assert counts["rows_read"] == counts["contacts"] + counts["duplicates"] + counts["rejected"]
    chunks = report["chunks"]
    assert chunks["total"] == chunks["imported"] == chunks["fewest_possible"] >= 4
    requests = report["requests"]
    assert requests["import_requests"] == chunks["total"]  # one request per chunk
    assert requests["status_polls"] == requests["polls_in_one_request"] >= 1
    assert report["mismatches"] == []
    assert report["not_delivered"] == {
        "contacts": 0, "chunks": [], "kept_in": None, "how_to_resend": None
    }  # fmt: skip
    assert report["rejects"]["file"] == f"az://reports/{run.run_id}/rejects.csv"
    # staging is empty again; the report and the rejects are in the reports container
    blobs = BlobServiceClient.from_connection_string(azurite)
    assert list(blobs.get_container_client("staging").list_blobs(f"{run.run_id}/")) == []
    rejects = blobs.get_container_client("reports").download_blob(f"{run.run_id}/rejects.csv")
    assert rejects.readall().decode().count("\r\n") == 1 + 20 + 19  # header, rejects, dups
    assert services.runs.read_report(run.run_id) == report
    # progress: every phase in order, ending done with everything counted
    phases = [s["phase"] for s in seen]
    order = ["preparing", "uploading", "waiting", "finishing", "done"]
    assert phases == sorted(phases, key=order.index)
    assert seen[-1]["contacts_done"] == len(expected)
    assert seen[-1]["status"] == "completed"


def test_a_failed_import_is_kept_reported_and_sent_again_on_resume(
    sandbox_factory: Callable[..., RunningSandbox], sample: Path, home: Path
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0)
    list_id = sandbox.create_list()
    connect(sandbox, home)
    sandbox.faults(import_failed={"rate": 1, "count": 2})  # the first two imports fail
    source = str(sample / EXPORT / TABLE / RUN)
    run = run_input(source, list_id)

    first = run_locally(
        run, RunActivities(services_for(env_for(sandbox, home, None))), timeout=TIMEOUT
    )

    report = first.report
    assert report is not None
    assert first.outcome.status is RunStatus.COMPLETED_WITH_ERRORS
    failed = [c for c in report["chunk_outcomes"] if c["fate"] == "import_failed"]
    assert len(failed) == 2
    lost = sum(c["contacts"] for c in failed)
    assert (
        report["counts"]["contacts_not_delivered"] == first.outcome.contacts_not_delivered == lost
    )
    assert report["not_delivered"]["chunks"] == [c["name"] for c in failed]
    staging = Path(report["not_delivered"]["kept_in"])
    for entry in failed:  # the bodies that did not go are kept; the others are gone
        assert entry["kept_at"] == str(staging / entry["name"])
        assert Path(entry["kept_at"]).is_file()
    assert sorted(p.name for p in (staging / "chunks").iterdir()) == sorted(
        Path(c["name"]).name for c in failed
    )
    assert len(sandbox.members(list_id)) == len(expected_emails(sample)) - lost
    accepted_before = imports_accepted(sandbox)

    again = run_locally(
        run, RunActivities(services_for(env_for(sandbox, home, None))), timeout=TIMEOUT
    )

    assert again.outcome.status is RunStatus.COMPLETED
    assert sorted(sandbox.members(list_id)) == sorted(expected_emails(sample))
    assert imports_accepted(sandbox) - accepted_before == 2  # only the failed ones again
    assert again.report is not None
    assert sum(c["already_accepted"] for c in again.report["chunk_outcomes"]) == (
        again.report["chunks"]["total"] - 2
    )
    assert isinstance(services_for(env_for(sandbox, home, None)).runs, LocalRunStore)
    assert not staging.exists()  # all delivered: staging cleared


def test_quota_exhausted_stops_and_the_same_run_resumes_after_the_reset(
    sandbox_factory: Callable[..., RunningSandbox], sample: Path, home: Path
) -> None:
    # A key of its own: the process's pacer for it stops for the day, as it should.
    sandbox = sandbox_factory(
        rate_limit=0, daily_quota=3, activity_delay=0, client_id=f"quota-{uuid.uuid4().hex[:8]}"
    )
    list_id = sandbox.create_list()
    connect(sandbox, home)
    source = str(sample / EXPORT / TABLE / RUN)
    run = run_input(source, list_id, options=replace(OPTIONS, upload_window=2))

    first = run_locally(
        run, RunActivities(services_for(env_for(sandbox, home, None))), timeout=TIMEOUT
    )

    assert first.outcome.status is RunStatus.QUOTA_EXHAUSTED
    assert first.outcome.resume_after is not None
    assert first.outcome.resume_after.endswith("T00:00:00Z")
    report = first.report
    assert report is not None
    assert report["quota"]["resets_at"] == first.outcome.resume_after
    assert "--run-id " + run.run_id in report["quota"]["resume"]
    fates = [c["fate"] for c in report["chunk_outcomes"]]
    assert fates.count("unconfirmed") == 3  # accepted; the quota left no poll to confirm them
    assert set(fates) == {"unconfirmed", "not_sent"}
    assert (
        report["counts"]["contacts_unconfirmed"] + report["counts"]["contacts_not_delivered"]
        == (report["counts"]["contacts"])
    )
    assert sandbox.stats()["quota_exceeded"] == 1  # one refusal, then nothing more was sent

    sandbox.reset_usage()  # 00:00 UTC: the account's quota and this process's pacer reset
    sandbox.settings(daily_quota=10_000)
    next_day = replace(services_for(env_for(sandbox, home, None)), pacer=Pacer(4.0))
    again = run_locally(run, RunActivities(next_day), timeout=TIMEOUT)

    assert again.outcome.status is RunStatus.COMPLETED
    assert sorted(sandbox.members(list_id)) == sorted(expected_emails(sample))
    assert imports_accepted(sandbox) == report["chunks"]["total"]  # none sent twice


# --- the activities called directly, as the host would ---------------------------------------


def test_activity_handlers_prepare_once_and_upload_each_chunk_once(
    sandbox: RunningSandbox, sample: Path, home: Path
) -> None:
    list_id = sandbox.create_list()
    connect(sandbox, home)
    activities = RunActivities(services_for(env_for(sandbox, home, None)))
    previous = bindings.install(activities)
    try:
        prepare = bindings.PREPARE_SEGMENT.build().get_user_function()
        upload = bindings.UPLOAD_CHUNK.build().get_user_function()
        poll = bindings.POLL_IMPORTS.build().get_user_function()
        run = run_input(str(sample / EXPORT / TABLE / RUN), list_id)

        prepared = asyncio.run(prepare(run.to_json()))
        again = asyncio.run(prepare(run.to_json()))

        assert prepared["error"] is None
        assert not prepared["reused"]
        assert again["reused"]
        assert again["chunks"] == prepared["chunks"]
        chunk = prepared["chunks"][0]
        request = {"run_id": run.run_id, "connection": "default", "chunk": chunk}

        async def twice() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            first = await upload(request)
            second = await upload(request)
            ids = {"run_id": run.run_id, "connection": "default",
                   "activity_ids": [first["activity_id"]]}  # fmt: skip
            for _ in range(100):
                polled = await poll(ids)
                if polled["imports"][0]["state"] == "completed":
                    break
                await asyncio.sleep(0.05)
            await activities.aclose()
            return first, second, polled

        before = imports_accepted(sandbox)
        first, second, polled = asyncio.run(twice())
    finally:
        bindings.install(previous)

    assert first["verdict"] == second["verdict"] == "accepted"
    assert second["activity_id"] == first["activity_id"]
    assert not first["already_accepted"]
    assert second["already_accepted"]
    assert first["requests"] == 1
    assert second["requests"] == 0
    assert imports_accepted(sandbox) - before == 1  # the second call sent nothing
    [state] = polled["imports"]
    assert state["person_count"] == chunk["contacts"]
    assert polled["requests"] == 1


# --- the command line ------------------------------------------------------------------------


def test_ccexport_run_from_blob_storage_prints_the_report(
    sandbox: RunningSandbox, azurite: str, inbox: str, sample: Path, home: Path
) -> None:
    list_id = sandbox.create_list()
    env = env_for(sandbox, home, azurite)
    connected = run_cli(["connect", "--auto", "--port", "0"], env)
    assert connected.returncode == 0, connected.stderr
    args = ["run", inbox, "--list-id", list_id, "--map", "email=PrimaryEmail",
            "--map", "first_name=FirstName", "--json", "--poll-seconds", "0.2",
            "--max-body-bytes", str(BODY_BYTES)]  # fmt: skip

    done = run_cli(args, env, timeout=120)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed"
    assert report["trigger"] == "cli"
    assert report["export"] is None  # no definition: the state is keyed by its lists
    assert sorted(sandbox.members(list_id)) == sorted(expected_emails(sample))
    assert done.stderr == ""  # no progress bar without a terminal, no noise


def test_ccexport_run_refuses_an_unknown_list_before_doing_anything(
    sandbox: RunningSandbox, sample: Path, home: Path
) -> None:
    env = env_for(sandbox, home, None)
    connect(sandbox, home)
    unknown = str(uuid.uuid4())

    done = run_cli(
        ["run", str(sample / EXPORT / TABLE / RUN), "--list-id", unknown, "--map",
         "email=PrimaryEmail"], env,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"ccexport: error: list {unknown} does not exist in the account of connection 'default'"
    )
    assert not (home / "runs").exists()


# --- `ccexport run`: what it says and how it exits when contacts did not all go -------------


def run_command(
    sandbox: RunningSandbox, home: Path, sample: Path, list_id: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`ccexport run` of the sample from the local folder, bodies of BODY_BYTES."""
    args = ["run", str(sample / EXPORT / TABLE / RUN), "--list-id", list_id,
            "--map", "email=PrimaryEmail", "--map", "first_name=FirstName",
            "--poll-seconds", "0.2", "--max-body-bytes", str(BODY_BYTES), *extra]  # fmt: skip
    return run_cli(args, env_for(sandbox, home, None), timeout=120)


def printed_report(stdout: str) -> dict[str, Any]:
    """The report.json whose path `ccexport run` prints on its last line."""
    last = stdout.strip().splitlines()[-1].split()
    assert last[0] == "report", stdout
    found: dict[str, Any] = json.loads(Path(last[1]).read_bytes())
    return found


def sandbox_activities(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    """Every activity the sandbox holds, as the API describes it (newest first)."""
    request = urllib.request.Request(
        f"{sandbox.api_base}/activities?limit=500", headers=sandbox.auth_headers()
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        found: list[dict[str, Any]] = json.loads(response.read())["activities"]
    return found


def body_emails(path: Path) -> set[str]:
    """The addresses in a staged request body."""
    return {c["email"] for c in json.loads(path.read_bytes())["import_data"]}


def test_an_import_counted_short_is_a_mismatch_and_ccexport_run_exits_3(
    sandbox_factory: Callable[..., RunningSandbox], sample: Path, home: Path
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0)
    list_id = sandbox.create_list()
    connect(sandbox, home)
    # One import completes without its last contact: Constant Contact counts one fewer.
    sandbox.faults(import_short={"rate": 1, "count": 1})

    done = run_command(sandbox, home, sample, list_id)

    assert done.returncode == 3, done.stdout + done.stderr
    assert sandbox.stats()["faults"]["import_short"] == 1
    [short] = [a for a in sandbox_activities(sandbox) if a["status"]["correctable_count"]]
    sent = short["status"]["items_total_count"]
    assert short["status"]["person_count"] == sent - 1
    missing = set(expected_emails(sample)) - set(sandbox.members(list_id))
    assert len(missing) == 1  # the one contact it did not count is not on the list
    report = printed_report(done.stdout)
    assert report["status"] == "completed_with_errors"
    # Which import: the one whose activity Constant Contact counted short, and only it.
    [entry] = [c for c in report["chunk_outcomes"] if c["activity_id"] == short["activity_id"]]
    assert (entry["fate"], entry["contacts"], entry["shortfall"]) == ("imported", sent, 1)
    assert report["mismatches"] == [
        {"chunk": entry["name"], "sent": sent, "person_count": sent - 1,
         "error_count": 0, "correctable_count": 1}
    ]  # fmt: skip
    others = [c for c in report["chunk_outcomes"] if c is not entry]
    assert others
    assert all(c["person_count"] == c["contacts"] and not c["shortfall"] for c in others)
    counts = report["counts"]
    assert counts["contacts_not_delivered"] == 1
    assert (
        counts["contacts_delivered"] == counts["contacts"] - 1 == len(expected_emails(sample)) - 1
    )
    assert counts["person_count"] == counts["contacts"] - 1
    assert report["not_delivered"]["contacts"] == 1
    # What the command printed says the same, naming the import.
    lines = done.stdout.splitlines()
    assert (
        f"  ! {entry['name']}: sent {sent:,}, Constant Contact counted {sent - 1:,} "
        "(errors 0, correctable 1)" in lines
    )
    assert f"  ! {entry['name']}: imported, {sent:,} contacts (1 contacts not counted)" in lines
    assert "  NOT delivered            1" in lines


def test_ccexport_run_exits_3_naming_the_contacts_that_did_not_go_then_0_on_resume(
    sandbox_factory: Callable[..., RunningSandbox], sample: Path, home: Path
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0)
    list_id = sandbox.create_list()
    connect(sandbox, home)
    sandbox.faults(import_failed={"rate": 1, "count": 1})  # one import ends failed

    done = run_command(sandbox, home, sample, list_id)

    assert done.returncode == 3, done.stdout + done.stderr
    report = printed_report(done.stdout)
    assert report["status"] == "completed_with_errors"
    [failed] = [c for c in report["chunk_outcomes"] if c["fate"] == "import_failed"]
    missing = set(expected_emails(sample)) - set(sandbox.members(list_id))
    # The report names the body that did not go; it is kept, holding exactly those people.
    assert body_emails(Path(failed["kept_at"])) == missing
    assert len(missing) == failed["contacts"] == report["counts"]["contacts_not_delivered"] > 0
    held = report["not_delivered"]
    assert (held["contacts"], held["chunks"]) == (len(missing), [failed["name"]])
    assert Path(failed["kept_at"]).parent.parent == Path(held["kept_in"])
    assert f"--run-id {report['run_id']}" in held["how_to_resend"]
    lines = done.stdout.splitlines()
    assert f"  NOT delivered   {len(missing):>10,}" in lines
    [flagged] = [line for line in lines if line.startswith(f"  ! {failed['name']}: ")]
    assert flagged.startswith(f"  ! {failed['name']}: import failed, {len(missing):,} contacts (")
    assert f"  kept for resend {held['kept_in']}" in lines

    again = run_command(sandbox, home, sample, list_id, "--run-id", report["run_id"])

    assert again.returncode == 0, again.stdout + again.stderr
    assert printed_report(again.stdout)["status"] == "completed"
    assert sorted(sandbox.members(list_id)) == sorted(expected_emails(sample))


def test_ccexport_run_exits_1_when_nothing_could_be_sent(
    sandbox_factory: Callable[..., RunningSandbox], sample: Path, home: Path
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0)
    list_id = sandbox.create_list()
    connect(sandbox, home)
    sandbox.faults(import_failed=1)  # every import ends failed

    done = run_command(sandbox, home, sample, list_id, "--json")

    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "failed"
    assert {c["fate"] for c in report["chunk_outcomes"]} == {"import_failed"}
    assert report["counts"]["contacts_delivered"] == 0
    assert report["counts"]["contacts_not_delivered"] == report["counts"]["contacts"]
    assert sandbox.members(list_id) == []


def test_ccexport_run_exits_3_when_the_daily_quota_runs_out(
    sandbox_factory: Callable[..., RunningSandbox], sample: Path, home: Path
) -> None:
    # The list check and two imports fit in the day's quota; the rest waits for tomorrow.
    sandbox = sandbox_factory(rate_limit=0, daily_quota=3, activity_delay=0)
    list_id = sandbox.create_list()
    connect(sandbox, home)

    done = run_command(sandbox, home, sample, list_id)

    assert done.returncode == 3, done.stdout + done.stderr
    report = printed_report(done.stdout)
    assert report["status"] == "quota_exhausted"
    resets_at = report["quota"]["resets_at"]
    assert resets_at.endswith("T00:00:00Z")
    assert f"  quota           exhausted; resets at {resets_at}" in done.stdout.splitlines()
    assert f"--run-id {report['run_id']}" in report["quota"]["resume"]


@pytest.fixture(autouse=True)
def _no_leftover_bindings() -> Iterator[None]:
    yield
    assert bindings.install(None) is None  # every test put the activities back
