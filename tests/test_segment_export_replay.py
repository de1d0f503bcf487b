"""The segment_export orchestrator replayed through azure-functions-durable's own executor.

Episode after episode, as the Functions host runs it (tests/support/durable_history.py),
with every replay checked for determinism. The activities here are a scripted account
(tests/support/scripted_account.py): they answer as the real ones do
(shared/runs/contract.py payloads), so each branch of the orchestrator can be driven: a
failed chunk, a failed import, the daily quota, slow imports, polls that fail. The real
activities run in tests/test_export_run.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions import orchestrator as orchestration
from functions.orchestrator import MAX_POLL_FAILURES, SEGMENT_EXPORT, segment_export
from shared.exports.definitions import ExportDefinition
from shared.runs.contract import RunInput, RunOptions, RunStatus
from tests.support.durable_history import (
    START,
    ActionType,
    EventType,
    History,
    HostRun,
    assert_deterministic,
    replay,
    run_by_replay,
)
from tests.support.scripted_account import Account

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
EXPORT = ExportDefinition(list_ids=(LIST_ID,), mapping={"email": "Email"}, name="high-value")
OPTIONS = RunOptions(upload_window=2, poll_seconds=30, attempts=2, retry_seconds=5)


def run_input(run_id: str = "replay-run", options: RunOptions = OPTIONS) -> dict[str, Any]:
    return RunInput.create(
        run_id, EXPORT, "az://inbox/BlobExport/HighValueSegment/2026/11/28/0930",
        trigger="blob", requested_at=START, options=options,
    ).to_json()  # fmt: skip


def play(account: Account, options: RunOptions = OPTIONS) -> HostRun:
    return run_by_replay(segment_export, run_input(options=options), account, name="segment_export")


def fates(account: Account) -> dict[int, str]:
    [finish] = account.finished
    return {o.chunk.index: o.fate.value for o in finish.outcomes}


def uploads(run: HostRun) -> list[int]:
    return [inp["chunk"]["index"] for name, inp in run.calls if name == "upload_chunk"]


def most_uploads_in_flight(run: HostRun) -> int:
    """The most upload tasks scheduled and not yet answered at any point of the history."""
    open_ids: set[int] = set()
    most = 0
    for event in run.history.events:
        kind = event["EventType"]
        if kind == EventType.TASK_SCHEDULED and event["Name"] == "upload_chunk":
            open_ids.add(event["EventId"])
            most = max(most, len(open_ids))
        elif kind in (EventType.TASK_COMPLETED, EventType.TASK_FAILED):
            open_ids.discard(event["TaskScheduledId"])
    return most


def test_first_episode_asks_for_prepare_only_with_retries() -> None:
    state = replay(segment_export, History("segment_export", run_input()))

    assert not state.is_done
    assert state.custom_status["phase"] == "preparing"
    [prepare] = state.flat_actions()
    assert prepare["actionType"] == ActionType.CALL_ACTIVITY_WITH_RETRY
    assert prepare["functionName"] == "prepare_segment"  # resolved from the decorated activity
    assert prepare["retryOptions"] == {
        "firstRetryIntervalInMilliseconds": 5000,
        "maxNumberOfAttempts": 2,
    }
    assert json.loads(prepare["input"]) == run_input()


def test_happy_path_uploads_in_windows_polls_everything_at_once_and_reports() -> None:
    account = Account(chunks=5, polls_to_finish=2)

    run = play(account)

    assert run.final.is_done
    assert run.final.error is None
    assert run.final.output == {
        "run_id": "replay-run",
        "status": "completed",
        "contacts_total": 500,
        "contacts_delivered": 500,
        "contacts_not_delivered": 0,
        "contacts_unconfirmed": 0,
        "report": "az://reports/replay-run/report.json",
        "resume_after": None,
    }
    assert run.final.custom_status == {
        "phase": "done",
        "run_id": "replay-run",
        "status": "completed",
        "chunks_total": 5,
        "chunks_uploaded": 5,
        "chunks_done": 5,
        "chunks_failed": 0,
        "contacts_total": 500,
        "contacts_sent": 500,
        "contacts_done": 500,
        "polls": 2,
        "started_at": run.final.custom_status["started_at"],
        "requests_estimated": 81,  # 5 imports, 76 polls at most in a 6-hour wait
        "resumes_at": None,
    }
    assert uploads(run) == [1, 2, 3, 4, 5]  # one request per chunk, none again
    # each poll asks about every pending import, in one activity call
    assert account.polls == [[f"activity-{i}" for i in range(1, 6)]] * 2
    [finish] = account.finished
    assert finish.status is RunStatus.COMPLETED
    assert finish.requests.import_requests == 5
    assert finish.requests.status_polls == finish.requests.polls_in_one_request == 2
    scheduled = [a for a in run.scheduled if a.get("functionName") == "upload_chunk"]
    assert all(a["actionType"] == ActionType.CALL_ACTIVITY_WITH_RETRY for a in scheduled)
    assert most_uploads_in_flight(run) == 2  # windows of two
    assert run.history.count(EventType.TIMER_CREATED) == 2  # two poll intervals, no retries


def test_a_failed_chunk_does_not_take_the_others_down() -> None:
    account = Account(chunks=5, broken={3}, refused={5}, failing_imports={2})

    run = play(account)

    assert run.final.is_done
    assert run.final.output["status"] == "completed_with_errors"
    assert fates(account) == {
        1: "imported",
        2: "import_failed",
        3: "upload_failed",
        4: "imported",
        5: "upload_failed",
    }
    assert run.final.output["contacts_delivered"] == 200
    assert run.final.output["contacts_not_delivered"] == 300
    [finish] = account.finished
    broken = next(o for o in finish.outcomes if o.chunk.index == 3)
    assert broken.error == "Activity function 'upload_chunk' failed: chunk 3: connection reset"
    # chunk 4 shared the window with chunk 3: asked again one by one, it answered from
    # its mark and was not sent twice
    assert account.sent.count(4) == 1
    assert next(o for o in finish.outcomes if o.chunk.index == 4).already_accepted


def test_quota_exhausted_stops_uploads_and_says_when_it_resumes() -> None:
    account = Account(chunks=6, quota_from=3)

    run = play(account)

    assert run.final.is_done
    assert run.final.output["status"] == "quota_exhausted"
    assert run.final.output["resume_after"] == "2026-11-29T00:00:00Z"
    assert uploads(run) == [1, 2, 3, 4]  # the window that met the quota, then no more
    assert fates(account) == {
        1: "unconfirmed",
        2: "unconfirmed",
        3: "not_sent",
        4: "not_sent",
        5: "not_sent",
        6: "not_sent",
    }
    assert account.polls == []  # a poll would only meet the quota again
    [finish] = account.finished
    assert finish.resets_at == "2026-11-29T00:00:00Z"


def test_a_short_import_is_flagged_and_counted_as_not_delivered() -> None:
    account = Account(chunks=2, short={2: 7})

    run = play(account)

    assert run.final.output["status"] == "completed_with_errors"
    assert run.final.output["contacts_delivered"] == 193
    assert run.final.output["contacts_not_delivered"] == 7


def test_unusable_input_fails_the_run_with_a_report_and_sends_nothing() -> None:
    account = Account(prepare_error="column 'Email' is missing")

    run = play(account)

    assert run.final.is_done
    assert run.final.output["status"] == "failed"
    assert uploads(run) == []
    [finish] = account.finished
    assert finish.error == "column 'Email' is missing"


def test_uploads_wait_for_room_in_the_activity_queue() -> None:
    options = RunOptions(upload_window=2, max_pending_imports=3, poll_seconds=30, attempts=2)
    account = Account(chunks=5)

    run = play(account, options)

    assert run.final.output["status"] == "completed"
    # after the first window (2 pending), a second window would make 4 > 3: poll first
    assert account.polls[0] == ["activity-1", "activity-2"]
    assert uploads(run) == [1, 2, 3, 4, 5]


def test_polls_that_keep_failing_leave_the_imports_unconfirmed() -> None:
    account = Account(chunks=1, failing_polls=1000)

    run = play(account)

    assert run.final.output["status"] == "completed_with_errors"
    assert run.final.output["contacts_unconfirmed"] == 100
    assert fates(account) == {1: "unconfirmed"}
    [finish] = account.finished
    assert finish.requests.status_polls == MAX_POLL_FAILURES
    assert account.poll_attempts == MAX_POLL_FAILURES * OPTIONS.attempts


@pytest.mark.parametrize(
    "account",
    [Account(), Account(broken={2}, failing_imports={1}), Account(chunks=4, quota_from=2)],
    ids=["happy", "failed-chunk", "quota"],
)
def test_the_whole_history_replays_to_the_same_state(account: Account) -> None:
    run = play(account)

    assert assert_deterministic(segment_export, run.history, run.scheduled) == run.final
    host_entry = SEGMENT_EXPORT.build().get_user_function()
    state = json.loads(host_entry(run.history.to_json()))
    assert state["isDone"]
    assert state["output"] == run.final.output
    assert state["customStatus"] == run.final.custom_status


def test_the_orchestrator_reads_no_clock_but_the_context() -> None:
    """Two runs of the same input give the same history, to the timestamp."""
    first, second = play(Account()), play(Account())

    assert first.history.to_json() == second.history.to_json()
    assert orchestration.failure_reason(Exception("a \n b")) == "a"
