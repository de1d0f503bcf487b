"""Contacts a run did not deliver are sent again by the next run, and only they.

A partly delivered add-mode run leaves the export's snapshot updated with the contacts
of the imports Constant Contact took and counted in full; the others keep their old
entry (or stay out) and are the state's retry set, named by the run. The next run,
incremental, sends exactly them and its report says how many and from which run.

End to end on the local engine with the sandbox (a failed import; an import counted
short), and the pure pieces: the merge, the retry count, the state file.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.sample import EXPORT, RUN, TABLE
from shared.exports.changes import ChangeTracker
from shared.exports.state import ExportState, delivered_snapshot, email_keys, load
from shared.runs.activities import RunActivities
from shared.runs.contract import RunStatus
from shared.runs.next_state import chunk_keys, not_fully_delivered
from shared.runs.prepared import ChunkRef
from shared.runs.report import render
from shared.runs.uploads import ChunkFate, ChunkOutcome, ImportState
from shared.workstation.local_run import run_locally
from tests.support.export_runs import (
    OPTIONS,
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
    """tests/test_export_run.py's sample: 1,961 contacts, four chunks of about 500."""
    out = tmp_path_factory.mktemp("sample")
    write_export_sample(out)
    return out


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def keys(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


# --- the pure pieces ------------------------------------------------------------------


def test_the_merge_records_the_delivered_and_keeps_the_old_entry_of_the_rest() -> None:
    old = ExportState({}, keys(1, 2, 3, 9), keys(10, 20, 30, 90))  # 9 left the segment
    # The segment now: 1 unchanged, 2 and 3 changed, 4 and 5 new.
    staged = ExportState({}, keys(1, 2, 3, 4, 5), keys(10, 21, 31, 40, 50))
    undelivered = keys(3, 5)  # a chunk held 3 and 5, and did not go

    got_keys, got_digests = delivered_snapshot(old, staged, undelivered)

    # 2 and 4 went: recorded as sent; 3 keeps its old entry, 5 stays out; 9 is dropped.
    assert got_keys.tolist() == [1, 2, 3, 4]
    assert got_digests.tolist() == [10, 21, 30, 40]
    # A retried finish, with its own result as the old snapshot, writes the same.
    again = delivered_snapshot(ExportState({}, got_keys, got_digests), staged, undelivered)
    assert again[0].tolist() == got_keys.tolist()
    assert again[1].tolist() == got_digests.tolist()
    # Without a comparable old snapshot, every undelivered contact stays out.
    bare = delivered_snapshot(None, staged, undelivered)
    assert bare[0].tolist() == [1, 2, 4]
    assert bare[1].tolist() == [10, 21, 40]
    # Nothing undelivered: the staged snapshot as it is.
    assert delivered_snapshot(old, staged, keys())[0].tolist() == [1, 2, 3, 4, 5]


def test_the_next_run_counts_the_retry_set_it_sends_again() -> None:
    previous = ExportState(
        {"retry_from": "e2e.run1"}, keys(1, 2, 3), keys(10, 20, 30), retry=keys(2, 3, 7)
    )
    tracker = ChangeTracker(previous)
    # 2 is sent (still as the failed run had it), 3 is back to its old digest (not
    # sent: not retried), 7 is absent from the old snapshot (new: sent), 8 is new.
    batch = keys(1, 2, 3, 7, 8)
    digests = keys(10, 21, 30, 70, 80)
    ends = array("q", range(1, 6))
    tracker.select(b"abcde", ends, batch.astype("<u8").tobytes(), digests.astype("<u8").tobytes())

    counts = tracker.finish().to_json()

    assert counts["retried"] == {"contacts": 2, "from_run": "e2e.run1"}
    assert (counts["added"], counts["updated"], counts["unchanged"]) == (2, 1, 2)
    # A full run sends everyone anyway: nothing is counted as retried.
    full = ChangeTracker(previous, full=True)
    full.select(b"abcde", ends, batch.astype("<u8").tobytes(), digests.astype("<u8").tobytes())
    assert "retried" not in full.finish().to_json()
    # No retry set: no retried entry at all.
    assert "retried" not in ChangeTracker(ExportState({}, keys(1), keys(10))).finish().to_json()


def test_the_retry_set_round_trips_and_a_state_without_one_names_no_run() -> None:
    state = ExportState(
        {"key": "a", "retry_from": "e2e.run1"},
        keys(1, 5),
        keys(10, 50),
        {"list": keys(1)},
        keys(3, 4),
    )
    back = ExportState.from_bytes(state.to_bytes())
    assert back.retry.tolist() == [3, 4]
    assert back.retry_from == "e2e.run1"
    assert back.header["retry_count"] == 2
    assert back.managed["list"].tolist() == [1]
    # A completed run's state: the header it inherits names no run to retry.
    done = ExportState.from_bytes(ExportState(back.header, back.keys, back.digests).to_bytes())
    assert done.retry.size == 0
    assert done.retry_from == ""
    assert "retry_from" not in done.header


def test_a_chunk_counted_short_is_not_fully_delivered_and_its_keys_are_its_emails() -> None:
    def outcome(index: int, fate: ChunkFate, person_count: int | None = None) -> ChunkOutcome:
        state = (
            None
            if person_count is None
            else ImportState("a", "completed", person_count=person_count)
        )
        chunk = ChunkRef(index, f"chunks/chunk-{index:05d}.json", 3, 100)
        return ChunkOutcome(chunk, fate, activity_id="a", import_state=state)

    outcomes = [
        outcome(1, ChunkFate.IMPORTED, 3),
        outcome(2, ChunkFate.IMPORTED, 2),  # short by one
        outcome(3, ChunkFate.IMPORT_FAILED),
        outcome(4, ChunkFate.UNCONFIRMED),
        outcome(5, ChunkFate.NOT_SENT),
    ]
    assert [o.chunk.index for o in not_fully_delivered(outcomes)] == [2, 3, 4, 5]
    body = (
        b'{"import_data":[{"email":"a@x.io","first_name":"A"},{"email":"b@x.io"}],"list_ids":["l"]}'
    )
    assert chunk_keys(body).tolist() == email_keys(["a@x.io", "b@x.io"]).tolist()


# --- end to end ----------------------------------------------------------------------


def _state(activities: RunActivities, report: dict[str, Any]) -> ExportState:
    key = report["changes"]["state"]["key"]
    state = load(activities.states, key)
    assert state is not None
    return state


def _no_email_in(data: bytes, emails: list[str]) -> None:
    for email in emails:
        assert email.encode() not in data


def _run_twice(
    sandbox: RunningSandbox, sample: Path, home: Path, **fault: Any
) -> tuple[dict[str, Any], dict[str, Any], RunActivities, str]:
    """Run 1 under ``fault``, then run 2 (a new run id, incremental, no fault)."""
    list_id = sandbox.create_list()
    connect(sandbox, home)
    sandbox.faults(**fault)
    source = str(sample / EXPORT / TABLE / RUN)
    activities = RunActivities(services_for(env_for(sandbox, home, None)))
    first = run_locally(run_input(source, list_id, options=OPTIONS), activities, timeout=TIMEOUT)
    assert first.outcome.status is RunStatus.COMPLETED_WITH_ERRORS
    assert first.report is not None
    before = imports_accepted(sandbox)
    second = run_locally(run_input(source, list_id, options=OPTIONS), activities, timeout=TIMEOUT)
    assert second.outcome.status is RunStatus.COMPLETED
    assert second.report is not None
    assert sorted(sandbox.members(list_id)) == sorted(expected_emails(sample))
    assert imports_accepted(sandbox) - before == 1  # the one chunk, nothing else
    return first.report, second.report, activities, list_id


def test_a_failed_import_is_sent_again_by_the_next_run_and_only_it(
    sandbox_factory: Callable[..., RunningSandbox], sample: Path, home: Path
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0)
    # Read the state between the runs: wrap run 2 by hand instead of _run_twice.
    list_id = sandbox.create_list()
    connect(sandbox, home)
    sandbox.faults(import_failed={"rate": 1, "count": 1})  # the first import fails
    source = str(sample / EXPORT / TABLE / RUN)
    activities = RunActivities(services_for(env_for(sandbox, home, None)))
    first = run_locally(run_input(source, list_id), activities, timeout=TIMEOUT)

    report = first.report
    assert report is not None
    assert first.outcome.status is RunStatus.COMPLETED_WITH_ERRORS
    [failed] = [c for c in report["chunk_outcomes"] if c["fate"] == "import_failed"]
    lost, contacts = failed["contacts"], report["counts"]["contacts"]
    assert report["changes"]["state"]["written"] is True
    assert report["changes"]["state"]["retry"] == {"contacts": lost, "chunks": 1}
    state = _state(activities, report)
    emails = expected_emails(sample)
    # The delivered contacts are recorded; the failed chunk's are not (there was no
    # earlier snapshot: they are left out), and they are the retry set, named by run 1.
    assert state.contacts == contacts - lost
    assert (state.retry_from, int(state.retry.size)) == (report["run_id"], lost)
    assert state.header["retry_count"] == lost
    assert state.header["content_hash"] == ""
    raw = activities.states.read(report["changes"]["state"]["key"])
    assert raw is not None
    _no_email_in(raw, emails)

    second = run_locally(run_input(source, list_id), activities, timeout=TIMEOUT)

    again = second.report
    assert again is not None
    assert second.outcome.status is RunStatus.COMPLETED
    assert again["run_id"] != report["run_id"]
    # Only the failed chunk's contacts went: one import, the rest unchanged.
    assert again["counts"]["contacts_sent"] == lost
    assert again["changes"]["incremental"] is True
    assert (again["changes"]["added"], again["changes"]["updated"]) == (lost, 0)
    assert again["changes"]["unchanged"] == contacts - lost
    assert again["changes"]["retried"] == {"contacts": lost, "from_run": report["run_id"]}
    assert f"  retried         {lost:>10,}  (not delivered by run {report['run_id']})" in (
        render(again).splitlines()
    )
    assert sorted(sandbox.members(list_id)) == sorted(emails)
    # Run 2 delivered everything: the snapshot is the segment's, with nothing to retry.
    done = _state(activities, again)
    assert done.contacts == contacts
    assert done.retry.size == 0
    assert done.retry_from == ""
    # A run 1 report says nothing was retried (no earlier run left anything).
    assert "retried" not in report["changes"]


def test_an_import_counted_short_has_its_whole_chunk_sent_again(
    sandbox_factory: Callable[..., RunningSandbox], sample: Path, home: Path
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0)

    first, second, activities, _ = _run_twice(
        sandbox, sample, home, import_short={"rate": 1, "count": 1}
    )

    [short] = [c for c in first["chunk_outcomes"] if c["shortfall"]]
    assert (short["fate"], short["shortfall"]) == ("imported", 1)
    # Which contact Constant Contact left out is not said: the whole chunk is retried.
    assert first["changes"]["state"]["retry"] == {"contacts": short["contacts"], "chunks": 1}
    staging = Path(activities.services.runs.staging_location(first["run_id"]))
    assert staging.is_dir()  # the run is partial: staging stays
    assert not (staging / short["name"]).exists()  # deleted once the state was written
    assert second["counts"]["contacts_sent"] == short["contacts"]
    assert second["changes"]["unchanged"] == first["counts"]["contacts"] - short["contacts"]
    assert second["changes"]["retried"] == {
        "contacts": short["contacts"],
        "from_run": first["run_id"],
    }
    assert _state(activities, second).retry.size == 0
