"""The daily quota, planned: a run estimates its requests before it sends and, when what
is left of the API key's day cannot carry them, waits for the reset instead of
stopping half-way.

The estimate is a pure function (shared/runs/estimate.py), tested on its own; the
orchestrator's use of it is replayed through azure-functions-durable's own executor
(tests/support/durable_history.py) against the scripted account, whose ``quota_left``
answers what is left and tells the reset from the simulated clock. The run on the
local engine against the sandbox is tests/test_quota_planning_e2e.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.orchestrator import segment_export
from shared.console.run_view import RunState, progress_json, report_view, verdict
from shared.constant_contact import client
from shared.constant_contact.pacing import Usage
from shared.exports.definitions import ExportDefinition
from shared.runs.activities import key_day
from shared.runs.contract import CARRY, RunInput, RunOptions
from shared.runs.estimate import IDS_PER_LISTING, IDS_PER_REMOVAL, estimate_requests, poll_requests
from shared.runs.quota_plan import KeyDay, QuotaPlan, RequestEstimate
from shared.runs.report import build_report, render
from shared.runs.waits import poll_delay, polls_within
from tests.support.durable_history import (
    START,
    ActionType,
    Clock,
    EventType,
    History,
    HostRun,
    parse_timestamp,
    replay,
    run_by_replay,
)
from tests.support.scripted_account import Account

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
EXPORT = ExportDefinition(list_ids=(LIST_ID,), mapping={"email": "Email"}, name="high-value")
OPTIONS = RunOptions(upload_window=2, poll_seconds=30, attempts=2, retry_seconds=5)
ESTIMATE = 81
"""Five bodies under OPTIONS: 5 imports and the 76 polls a 6-hour wait makes at most
(30, 45, 67.5, 101.25, 151.9, 227.8 s, then 70 at the 300 s cap)."""
MIDNIGHT = datetime(2026, 11, 29, tzinfo=UTC)
"""The reset after START (2026-11-28 09:30 UTC)."""


# --- the estimate --------------------------------------------------------------------


def polls_step_by_step(options: RunOptions, seconds: float) -> int:
    waited, polls = 0.0, 0
    while waited < seconds:
        waited = min(seconds, waited + poll_delay(options, polls))
        polls += 1
    return polls


@pytest.mark.parametrize(
    ("options", "seconds"),
    [
        (RunOptions(), 6 * 3600),
        (RunOptions(max_poll_seconds=10), 6 * 3600),
        (OPTIONS, 6 * 3600),
        (RunOptions(poll_seconds=0.2), 3600),
        (RunOptions(poll_seconds=7, max_poll_seconds=5), 100),  # a cap under the first wait
        (RunOptions(), 25.0),  # over before the cap
    ],
)
def test_polls_within_counts_as_the_schedule_polls(options: RunOptions, seconds: float) -> None:
    assert polls_within(options, seconds) == polls_step_by_step(options, seconds)


def test_polls_within_a_six_hour_wait() -> None:
    assert polls_within(RunOptions(), 6 * 3600) == 79
    assert polls_within(OPTIONS, 6 * 3600) == 76
    assert polls_within(RunOptions(poll_seconds=1, max_poll_seconds=1), 10 * 86400) == 864_000


def test_a_small_run_is_its_imports_and_the_polls_of_a_whole_wait() -> None:
    estimate = estimate_requests(RunOptions(), bodies=4)

    assert estimate == RequestEstimate(imports=4, status_polls=79)
    assert estimate.total == estimate.still_needed == 83


def test_bodies_beyond_the_pending_budget_add_a_poll_per_window_that_waits() -> None:
    options = RunOptions(upload_window=8, max_pending_imports=500)

    assert estimate_requests(options, bodies=1000).status_polls == 79 + 500 // 8 + 1
    assert estimate_requests(options, bodies=500).status_polls == 79


def test_imports_past_one_listing_cost_a_request_each_a_poll() -> None:
    options = RunOptions(max_pending_imports=1000)

    assert poll_requests(0) == 0
    assert poll_requests(1) == 1
    assert poll_requests(IDS_PER_LISTING) == 1
    assert poll_requests(IDS_PER_LISTING + 1) == 2
    assert estimate_requests(options, bodies=1000).status_polls == 79 * 501


def test_mirror_counts_the_reads_made_and_the_removals_with_their_polls() -> None:
    estimate = estimate_requests(RunOptions(), bodies=2, member_requests=3, removals=[1200, 0, 3])

    assert estimate.members == 3
    assert estimate.removals == 3 + 1  # 1,200 members in three requests, 3 in one
    assert estimate.removal_polls == 79  # four activities: one listing a poll
    assert estimate.total == 3 + 2 + 79 + 4 + 79
    assert estimate.still_needed == estimate.total - 3
    only_removals = estimate_requests(RunOptions(), bodies=0, removals=[5])
    assert (only_removals.imports, only_removals.status_polls) == (0, 0)


def test_the_estimate_counts_requests_as_the_client_sends_them() -> None:
    assert IDS_PER_LISTING == client.PAGE_LIMIT
    assert IDS_PER_REMOVAL == client.MAX_IDS_PER_REQUEST


def test_the_key_day_comes_from_the_record_and_a_quota_stop_leaves_nothing() -> None:
    read_at = datetime(2026, 3, 1, 23, 59, 50, tzinfo=UTC).timestamp()
    day = key_day(Usage("k", "2026-03-01", 9_990, None, read_at=read_at), 10_000)

    assert day == KeyDay("2026-03-01", 9_990, 10_000, 10, "2026-03-02T00:00:00Z", 10.0)
    stopped = key_day(Usage("k", "2026-03-01", 12, "2026-03-02T00:00:00Z", read_at=read_at), 50)
    assert (stopped.left, stopped.resets_in) == (0, 10.0)


def test_a_plan_goes_when_the_day_carries_it_or_no_day_could() -> None:
    plan = QuotaPlan(RequestEstimate(members=3, imports=10, status_polls=40))

    def day(left: int, limit: int = 10_000) -> KeyDay:
        return KeyDay("2026-03-01", limit - left, limit, left, "2026-03-02T00:00:00Z", 60.0)

    assert plan.carried_by(day(50))  # the 3 reads are made: 50 are still needed
    assert not plan.carried_by(day(49))
    assert plan.carried_by(day(0, limit=49))  # more than a day: waiting cannot help
    assert QuotaPlan.from_json(plan.checked(day(7)).to_json()) == plan.checked(day(7))


# --- the orchestrator ----------------------------------------------------------------


def run_input(options: RunOptions = OPTIONS) -> dict[str, Any]:
    return RunInput.create(
        "replay-quota", EXPORT, "az://inbox/BlobExport/HighValueSegment/2026/11/28/0930",
        trigger="blob", requested_at=START, options=options,
    ).to_json()  # fmt: skip


def play(account: Account, options: RunOptions = OPTIONS) -> HostRun:
    return run_by_replay(
        segment_export, run_input(options), account, name="segment_export", clock=account.clock
    )


def names(run: HostRun) -> list[str]:
    return [name for name, _ in run.calls]


def scheduled_at(history: History, name: str) -> list[datetime]:
    return [
        parse_timestamp(e["Timestamp"])
        for e in history.events
        if e["EventType"] == EventType.TASK_SCHEDULED and e["Name"] == name
    ]


def timers(history: History) -> list[datetime]:
    return [
        parse_timestamp(e["FireAt"])
        for e in history.events
        if e["EventType"] == EventType.TIMER_CREATED
    ]


def test_with_enough_left_the_run_asks_once_and_sends_at_once() -> None:
    account = Account(chunks=5, polls_to_finish=2, left=[ESTIMATE])

    run = play(account)

    assert run.final.output["status"] == "completed"
    assert names(run)[:3] == ["prepare_segment", "quota_left", "upload_chunk"]
    assert names(run).count("quota_left") == 1
    # no timer before the uploads: they go right after the answer
    [first_upload, *_] = scheduled_at(run.history, "upload_chunk")
    assert first_upload == START + timedelta(seconds=2)
    assert all(t > first_upload for t in timers(run.history))
    [finish] = account.finished
    assert finish.plan is not None
    assert finish.plan.estimate == RequestEstimate(imports=5, status_polls=76)
    assert finish.plan.key_day == account.key_days[0]
    assert (finish.plan.waits, finish.plan.waited_since, finish.plan.error) == (0, None, None)
    assert finish.requests.total == 5 + 2  # five imports, two polls: the estimate's bound held
    assert run.final.custom_status["requests_estimated"] == ESTIMATE
    assert run.final.custom_status["resumes_at"] is None


def waiting_history(left: int) -> History:
    """The run's history up to the answer of its first look at the key's day."""
    history = History("segment_export", run_input(), instance_id="replay-quota")
    prepared = Account(chunks=5).prepare_segment(run_input())
    history.task_scheduled(0, "prepare_segment", json.dumps(run_input()), START)
    history.orchestrator_completed(START)
    at = START + timedelta(seconds=1)
    history.orchestrator_started(at)
    history.task_completed(0, prepared, at)
    history.task_scheduled(1, "quota_left", json.dumps({"run_id": "replay-quota"}), at)
    history.orchestrator_completed(at)
    history.orchestrator_started(at + timedelta(seconds=1))
    account = Account(left=[left], clock=Clock(at + timedelta(seconds=1)))
    history.task_completed(1, account.quota_left({}), at + timedelta(seconds=1))
    return history


def test_with_too_little_left_the_run_shows_waiting_for_quota_and_sets_its_timer() -> None:
    state = replay(segment_export, waiting_history(left=ESTIMATE - 1))

    assert not state.is_done
    assert state.custom_status["phase"] == "waiting_for_quota"
    assert state.custom_status["resumes_at"] == "2026-11-29T00:00:00Z"
    assert state.custom_status["requests_estimated"] == ESTIMATE
    assert state.custom_status["chunks_uploaded"] == 0
    *_, timer = state.flat_actions()
    assert timer["actionType"] == ActionType.CREATE_TIMER
    assert parse_timestamp(timer["fireAt"]) == MIDNIGHT
    assert not [a for a in state.flat_actions() if a.get("functionName") == "upload_chunk"]


def test_the_same_history_with_enough_left_sends() -> None:
    state = replay(segment_export, waiting_history(left=ESTIMATE))

    assert state.custom_status["phase"] == "uploading"
    assert state.custom_status["resumes_at"] is None
    uploads = [a for a in state.flat_actions() if a.get("functionName") == "upload_chunk"]
    assert len(uploads) == OPTIONS.upload_window


def test_a_run_waits_for_the_reset_then_asks_again_and_sends() -> None:
    account = Account(chunks=5, polls_to_finish=2, left=[ESTIMATE - 1, 10_000])

    run = play(account)

    assert run.final.output["status"] == "completed"
    assert names(run)[:4] == ["prepare_segment", "quota_left", "quota_left", "upload_chunk"]
    assert timers(run.history)[0] == MIDNIGHT
    # nothing before it: the first upload goes once the look after the reset answered
    assert min(scheduled_at(run.history, "upload_chunk")) == MIDNIGHT + timedelta(seconds=1)
    assert [d.day for d in account.key_days] == ["2026-11-28", "2026-11-29"]
    [finish] = account.finished
    assert finish.plan is not None
    assert finish.plan.waits == 1
    assert finish.plan.waited_since == "2026-11-28T09:30:02Z"
    assert finish.plan.key_day == account.key_days[-1]
    assert account.sent == [1, 2, 3, 4, 5]


def test_a_day_taken_by_others_at_the_reset_makes_the_run_wait_for_the_next() -> None:
    account = Account(chunks=5, left=[10, 10, 10_000])

    run = play(account)

    assert run.final.output["status"] == "completed"
    assert timers(run.history)[:2] == [MIDNIGHT, MIDNIGHT + timedelta(days=1)]
    assert min(scheduled_at(run.history, "upload_chunk")) == MIDNIGHT + timedelta(days=1, seconds=1)
    assert account.finished[0].plan is not None
    assert account.finished[0].plan.waits == 2


def test_a_run_bigger_than_a_day_goes_at_once() -> None:
    account = Account(chunks=5, daily_quota=ESTIMATE - 1, left=[ESTIMATE - 1])

    run = play(account)

    assert names(run).count("quota_left") == 1
    assert timers(run.history)[0] > START + timedelta(seconds=2)  # the first poll's, not a wait
    assert account.sent == [1, 2, 3, 4, 5]


def test_a_day_that_cannot_be_read_does_not_hold_the_run() -> None:
    class Unreadable(Account):
        def quota_left(self, data: Any) -> dict[str, Any]:
            raise ConnectionError("the storage account did not answer")

    account = Unreadable(chunks=3)

    run = play(account)

    assert run.final.output["status"] == "completed"
    assert names(run).count("quota_left") == OPTIONS.attempts
    [finish] = account.finished
    assert finish.plan is not None
    assert finish.plan.key_day is None
    assert finish.plan.error is not None
    assert "could not be read" in finish.plan.error
    assert "did not answer" in finish.plan.error


def test_nothing_to_send_asks_nothing() -> None:
    account = Account(chunks=0)

    run = play(account)

    assert "quota_left" not in names(run)
    assert account.finished[0].plan is None


def test_a_long_wait_for_the_quota_continues_as_new_and_stays_small() -> None:
    small = replace(OPTIONS, restart_after_tasks=4)
    account = Account(chunks=2, left=[0, 0, 0, 0, 10_000])

    run = play(account, small)

    assert run.final.output["status"] == "completed"
    assert "quota" in [handed[CARRY]["stage"] for handed in run.continued]
    assert max(len(h.events) for h in run.generations) < 40
    assert names(run).count("prepare_segment") == 1
    assert names(run).count("quota_left") == 5
    assert account.finished[0].plan is not None
    assert account.finished[0].plan.waits == 4
    # the custom status the waiting generation carried on, as it left it
    waiting = [h[CARRY] for h in run.continued if h[CARRY]["stage"] == "quota"]
    assert waiting[0]["phase"] == "waiting_for_quota"


# --- what a person sees ----------------------------------------------------------------


def test_the_run_page_says_the_wait_its_estimate_and_when_it_goes_on() -> None:
    status = replay(segment_export, waiting_history(left=ESTIMATE - 1)).custom_status
    state = RunState("Running", status, START)

    shown = verdict(state)
    assert shown.title == "Waiting for the daily quota to reset before sending"
    assert shown.detail == (
        f"what is left of the API key's daily request quota cannot carry its {ESTIMATE} "
        "estimated requests, so nothing has been sent; it starts by itself at "
        "2026-11-29 00:00 UTC, after the quota resets (to stop it instead, terminate the run)"
    )
    fields = progress_json(state, START + timedelta(minutes=5))["fields"]
    assert fields["phase"] == shown.title
    assert fields["sent"] == "0 of 500 (0 of 5 request bodies)"
    assert fields["left"] == "not known yet: nothing is sent before 2026-11-29 00:00 UTC"


def test_the_report_says_the_estimate_what_was_made_and_the_wait() -> None:
    account = Account(chunks=5, polls_to_finish=2, left=[ESTIMATE - 1, 10_000])
    play(account)
    [finish] = account.finished

    report = build_report(finish, staging="az://staging/x", rejects_file=None, resume_hint="-")

    assert report["requests"]["estimated"] == ESTIMATE
    assert report["requests"]["total"] == 7
    assert report["requests"]["estimate"]["status_polls"] == 76
    assert report["quota_plan"]["waits"] == 1
    assert report["quota_plan"]["key_day"]["day"] == "2026-11-29"
    facts = {fact.label: fact.value for fact in report_view(report).facts}
    assert facts["Requests planned"] == (
        f"7 made of {ESTIMATE} estimated before sending; waited for 1 daily quota reset "
        "from 2026-11-28 09:30 UTC"
    )
    assert "estimated 81 before sending" in render(report)
    assert "waited          for 1 daily quota reset" in render(report)
