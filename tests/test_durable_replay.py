"""The toy export orchestrator replayed through azure-functions-durable's own executor.

This is how the Functions host runs it in Azure (minus the host): history in, state
out, episode after episode. See tests/support/durable_history.py.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest

from tests.support import toy_export
from tests.support.durable_history import (
    START,
    ActionType,
    EventType,
    History,
    NonDeterminismError,
    activities,
    assert_deterministic,
    replay,
    run_by_replay,
)
from tests.support.toy_export import job
from tests.support.toy_export import toy_export as orchestrator

RUN_ACTIVITY = activities(toy_export.ACTIVITIES)


def test_first_episode_asks_for_the_plan_only() -> None:
    state = replay(orchestrator, History("toy_export", job("first")))

    assert not state.is_done
    assert state.error is None
    assert state.custom_status is None
    [plan] = state.flat_actions()
    assert plan["actionType"] == ActionType.CALL_ACTIVITY
    assert plan["functionName"] == "plan_chunks"  # resolved from the decorated activity
    assert json.loads(plan["input"]) == job("first")


def test_second_episode_fans_out_one_window_with_retries() -> None:
    history = History("toy_export", job("second"))
    history.task_scheduled(0, "plan_chunks", json.dumps(job("second")), START)
    history.orchestrator_completed(START)
    history.orchestrator_started(START + timedelta(seconds=1))
    history.task_completed(0, toy_export.plan_chunks(job("second")), START + timedelta(seconds=1))

    state = replay(orchestrator, history)

    assert state.custom_status == {"phase": "uploading", "done": 0, "total": 10}
    plan, *window = state.flat_actions()
    assert plan["functionName"] == "plan_chunks"
    assert [json.loads(a["input"])["chunk"] for a in window] == [0, 1, 2, 3]
    for action in window:
        assert action["actionType"] == ActionType.CALL_ACTIVITY_WITH_RETRY
        assert action["functionName"] == "upload_chunk"
        assert action["retryOptions"] == {
            "firstRetryIntervalInMilliseconds": toy_export.RETRY_MS,
            "maxNumberOfAttempts": toy_export.ATTEMPTS,
        }


def test_whole_run_by_replay_retries_polls_and_reports() -> None:
    run = run_by_replay(orchestrator, job("replay-happy"), RUN_ACTIVITY, name="toy_export")

    assert run.final.is_done
    assert run.final.error is None
    assert run.final.output == {"chunks": 10, "imported": 1045, "polls": 3, "report": "sent"}
    assert run.final.custom_status == {"phase": "done", "done": 10, "total": 10}
    # chunk 3 failed twice, then its third attempt went through
    assert toy_export.attempts["replay-happy/upload/3"] == 3
    assert run.history.count(EventType.TASK_FAILED) == 2
    uploads = [inp["chunk"] for name, inp in run.calls if name == "upload_chunk"]
    assert sorted(uploads) == sorted([*range(10), 3, 3])
    # 2 retry timers, 2 poll timers, 3 deadline timers raced against the polls
    assert run.history.count(EventType.TIMER_CREATED) == 7
    # the whole history replays to the same final state, twice
    assert assert_deterministic(orchestrator, run.history, run.scheduled) == run.final


def test_permanent_failure_is_caught_and_reported() -> None:
    run = run_by_replay(
        orchestrator, job("replay-report", report_fails=True), RUN_ACTIVITY, name="toy_export"
    )

    assert run.final.is_done
    assert run.final.output["report"] == (
        "not sent: Activity function 'send_report' failed: mail relay refused the report"
    )
    assert toy_export.attempts["replay-report/report"] == toy_export.ATTEMPTS


def test_uncaught_failure_fails_the_orchestration() -> None:
    run = run_by_replay(
        orchestrator, job("replay-broken", broken=[5]), RUN_ACTIVITY, name="toy_export"
    )

    assert not run.final.is_done
    assert run.final.output is None
    assert run.final.error is not None
    reason, details = run.final.error.split(" \n ", 1)
    assert reason == "Activity function 'upload_chunk' failed: chunk 5 is malformed"
    assert json.loads(details) == {"Message": "ChunkError: chunk 5 is malformed"}
    # the failure surfaced in the second window, after three attempts; no third window
    assert toy_export.attempts["replay-broken/upload/5"] == toy_export.ATTEMPTS
    assert {inp["chunk"] for name, inp in run.calls if name == "upload_chunk"} == set(range(8))
    assert run.final.custom_status == {"phase": "uploading", "done": 4, "total": 10}


def test_clock_comes_from_the_history() -> None:
    def nap(context: Any) -> Generator[Any, Any, str]:
        yield context.create_timer(context.current_utc_datetime + timedelta(minutes=5))
        return str(context.current_utc_datetime.isoformat())

    run = run_by_replay(nap, None, RUN_ACTIVITY)

    assert run.final.output == (START + timedelta(minutes=5)).isoformat()
    assert run.episodes == 2


def test_a_non_deterministic_orchestrator_is_caught() -> None:
    replays = iter(range(1000))

    def restless(context: Any) -> Generator[Any, Any, None]:
        # reads state that changes between replays, as datetime.now() or uuid4() would
        yield context.call_activity("plan_chunks", {"run": "restless", "chunks": next(replays)})

    with pytest.raises(NonDeterminismError, match="different states"):
        run_by_replay(restless, None, RUN_ACTIVITY)


def test_is_replaying_follows_the_history() -> None:
    run = run_by_replay(toy_export.replay_flags, None, RUN_ACTIVITY)

    assert run.final.output == [True, True, False]


def test_changed_code_does_not_fit_an_old_history() -> None:
    run = run_by_replay(orchestrator, job("replay-old"), RUN_ACTIVITY, name="toy_export")

    def changed(context: Any) -> Generator[Any, Any, None]:
        # a deployment that now polls before planning
        yield context.call_activity("check_import", {"attempt": 1, "polls_needed": 1})

    with pytest.raises(NonDeterminismError, match="action 0 was"):
        assert_deterministic(changed, run.history, run.scheduled)


def test_the_host_entry_point_gives_the_same_state() -> None:
    run = run_by_replay(orchestrator, job("replay-entry"), RUN_ACTIVITY, name="toy_export")
    host_entry = toy_export.TOY_EXPORT.build().get_user_function()

    state = json.loads(host_entry(run.history.to_json()))

    assert state["isDone"]
    assert state["output"] == run.final.output
    assert state["customStatus"] == run.final.custom_status
