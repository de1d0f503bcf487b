"""The run contract, the run store on both backends, the report text and the progress bar."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from shared.errors import ConfigError
from shared.exports.definitions import ExportDefinition
from shared.runs.bookkeeping import RunTally
from shared.runs.contract import RunInput, RunOptions, RunStatus
from shared.runs.ids import check_run_id, new_run_id
from shared.runs.prepared import ChunkRef, PreparedRun
from shared.runs.report import build_report, render
from shared.runs.store import BlobRunStore, LocalRunStore, RunStore
from shared.runs.uploads import (
    ChunkFate,
    ChunkOutcome,
    ImportState,
    PollResult,
    UploadResult,
    UploadVerdict,
)
from shared.wiring import stores
from shared.workstation.progress import ProgressBar

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
EXPORT = ExportDefinition(list_ids=(LIST_ID,), mapping={"email": "Email"}, name="weekly")
NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def run_input(**options: Any) -> RunInput:
    return RunInput.create(
        "weekly-1", EXPORT, "az://inbox/x", trigger="http", requested_at=NOW,
        options=RunOptions(**options),
    )  # fmt: skip


# --- the contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["a", "weekly-20261128t093000z-3f2a9c", "x.y_z-1", "9" * 128])
def test_run_ids_fit_instance_ids_blob_prefixes_and_folders(run_id: str) -> None:
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "A", "-a", "a/b", "a..b", "a b", "9" * 129, 7])
def test_other_run_ids_are_refused(run_id: Any) -> None:
    with pytest.raises(ConfigError, match="run id"):
        check_run_id(run_id)


def test_a_new_run_id_names_the_export_and_the_time() -> None:
    run_id = new_run_id("weekly", NOW)

    assert run_id.startswith("weekly-20261128t093000z-")
    assert new_run_id("weekly", NOW) != run_id


def test_the_input_round_trips_as_json_and_leaves_default_options_out() -> None:
    plain = run_input()
    tuned = run_input(poll_seconds=2.5, upload_window=4)

    assert "options" not in plain.to_json()
    assert plain.to_json()["requested_at"] == "2026-11-28T09:30:00Z"
    assert plain.to_json()["export"]["name"] == "weekly"
    assert RunInput.from_json(plain.to_json()) == plain
    assert RunInput.from_json(tuned.to_json()) == tuned
    assert tuned.definition() == EXPORT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trigger": "cron"}, "trigger 'cron'"),
        ({"options": {"poll_seconds": 0}}, "poll_seconds"),
        ({"options": {"windows": 3}}, "unknown run option"),
        ({"options": {"upload_window": 10, "max_pending_imports": 5}}, "max_pending_imports"),
        ({"source": ""}, "needs a source"),
        ({"export": None}, "export definition"),
    ],
)
def test_a_bad_input_is_refused_with_a_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunInput.from_json(run_input().to_json() | change)


def chunk(index: int, contacts: int = 100) -> ChunkRef:
    return ChunkRef(index, f"chunks/chunk-{index:05d}.json", contacts, 9_000)


def prepared_tally(chunks: int = 3) -> RunTally:
    tally = RunTally(run_input(), "2026-11-28T09:30:00Z")
    tally.prepared_run(
        PreparedRun(
            "weekly-1", tuple(chunk(i) for i in range(1, chunks + 1)), contacts=chunks * 100
        )
    )
    return tally


def test_the_tally_decides_the_status_from_what_became_of_each_chunk() -> None:
    tally = prepared_tally()
    assert tally.status() is RunStatus.FAILED  # nothing went yet
    for index in (1, 2, 3):
        tally.uploaded(UploadResult(index, UploadVerdict.ACCEPTED, f"a{index}", requests=1))
    assert tally.awaiting() == ["a1", "a2", "a3"]
    tally.polled(
        PollResult(
            (
                ImportState("a1", "completed", person_count=100),
                ImportState("a2", "processing"),
                ImportState("a3", "failed"),
            ),
            requests=1,
        )
    )
    assert tally.awaiting() == ["a2"]
    assert tally.progress()["chunks_done"] == 2
    tally.stop_waiting("gave up")
    assert tally.status() is RunStatus.COMPLETED_WITH_ERRORS
    outcome = tally.outcome("r")
    assert (outcome.contacts_delivered, outcome.contacts_not_delivered) == (100, 100)
    assert outcome.contacts_unconfirmed == 100


def test_a_refused_upload_of_every_chunk_fails_the_run() -> None:
    tally = prepared_tally(2)
    for index in (1, 2):
        tally.uploaded(UploadResult(index, UploadVerdict.REFUSED, requests=1, error="404"))

    assert tally.status() is RunStatus.FAILED
    assert tally.requests.import_requests == 2


# --- the run store -------------------------------------------------------------------------


@pytest.fixture(params=["local", "blob"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
    if request.param == "local":
        yield LocalRunStore(tmp_path / "runs")
        return
    conn: str = request.getfixturevalue("azurite")
    service = BlobServiceClient.from_connection_string(conn)
    suffix = tmp_path.name.replace("_", "-").lower()[-20:]
    yield BlobRunStore(service, staging=f"staging-{suffix}", reports=f"reports-{suffix}")


def test_a_run_store_keeps_marks_reports_and_rejects(store: RunStore) -> None:
    output = store.staging_output("run-1")
    output.write_chunk(1, b'{"import_data":[]}')
    output.rejects_stream().write("row,file\r\n")
    output.commit({"list_ids": [LIST_ID], "chunk_files": []})

    assert store.staged_summary("run-1") == {"list_ids": [LIST_ID], "chunk_files": []}
    assert store.read_chunk("run-1", "chunks/chunk-00001.json") == b'{"import_data":[]}'
    assert store.accepted("run-1", 1) is None
    store.mark_accepted("run-1", 1, "activity-1")
    assert store.accepted("run-1", 1) == "activity-1"
    store.forget_accepted("run-1", 1)
    assert store.accepted("run-1", 1) is None
    rejects = store.publish_rejects("run-1")
    assert rejects is not None
    assert rejects.endswith("run-1/rejects.csv")
    assert store.publish_rejects("run-1") == rejects  # moved once, still found
    assert store.read_report("run-1") is None
    where = store.write_report("run-1", {"status": "completed"})
    assert where == store.report_location("run-1")
    assert store.read_report("run-1") == {"status": "completed"}
    assert store.list_reports() == ["run-1"]
    store.clear_staging("run-1")
    assert store.staged_summary("run-1") is None
    assert store.read_report("run-1") == {"status": "completed"}  # reports stay


def test_the_store_follows_the_settings(tmp_path: Path, azurite: str) -> None:
    local = stores.open_run_store({"CCEXPORT_HOME": str(tmp_path)})
    blob = stores.open_run_store({"AzureWebJobsStorage": azurite, "REPORTS_CONTAINER": "done"})

    assert isinstance(local, LocalRunStore)
    assert local.root == tmp_path / "runs"
    assert isinstance(blob, BlobRunStore)
    assert blob.reports.container_name == "done"
    assert blob.staging.container_name == "staging"


# --- the report text and the progress bar ---------------------------------------------------


def test_the_report_says_what_did_not_go_and_where_it_is() -> None:
    tally = prepared_tally(2)
    tally.uploaded(UploadResult(1, UploadVerdict.ACCEPTED, "a1", requests=1))
    tally.uploaded(
        UploadResult(2, UploadVerdict.QUOTA_EXHAUSTED, requests=1, resets_at="2026-11-29T00:00:00Z")
    )
    request = tally.finish_request("2026-11-28T09:31:00Z")
    report = build_report(
        request, staging="/h/runs/weekly-1/staging", rejects_file=None, resume_hint="again"
    )

    assert report["status"] == "quota_exhausted"
    assert report["not_delivered"]["chunks"] == [
        "chunks/chunk-00001.json",
        "chunks/chunk-00002.json",
    ]
    assert (
        report["chunk_outcomes"][1]["kept_at"] == "/h/runs/weekly-1/staging/chunks/chunk-00002.json"
    )
    assert report["quota"] == {
        "exhausted": True,
        "resets_at": "2026-11-29T00:00:00Z",
        "resume": "after 2026-11-29T00:00:00Z: again",
    }
    text = render(report)
    assert "run weekly-1: quota exhausted" in text
    assert "NOT delivered          100" in text
    assert "unconfirmed            100" in text
    assert "kept for resend /h/runs/weekly-1/staging" in text
    assert "2 imports for 2 chunks" in text  # the one the quota refused counts too


def test_an_import_that_counted_fewer_contacts_is_a_mismatch() -> None:
    outcome = ChunkOutcome(
        chunk(1),
        ChunkFate.IMPORTED,
        "a1",
        import_state=ImportState("a1", "completed", person_count=98),
    )
    assert outcome.shortfall == 2


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    clock = iter(float(i) for i in range(100))
    screen, pipe = io.StringIO(), io.StringIO()
    bar = ProgressBar(screen, enabled=True, clock=lambda: next(clock), columns=lambda: 80)
    quiet = ProgressBar(pipe, enabled=False)
    status = {"phase": "uploading", "contacts_total": 200, "contacts_done": 100,
              "chunks_uploaded": 1, "chunks_total": 2, "chunks_failed": 0}  # fmt: skip

    bar.rows("r", 5_000)
    bar.status(status)
    bar.close()
    quiet.status(status)
    quiet.close()

    assert "preparing: 5,000 rows read" in screen.getvalue()
    assert "uploading  50%|####" in screen.getvalue()
    assert "| 100/200 contacts [" in screen.getvalue()
    assert ", 1/2 sent]" in screen.getvalue()
    assert screen.getvalue().endswith("\n")
    assert pipe.getvalue() == ""
