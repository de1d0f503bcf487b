"""Long waits stay small: status polls back off to a cap (shared/runs/waits.py), and an
orchestration that has scheduled enough continues as new carrying its tally
(shared/runs/bookkeeping.py), so every generation's history stays short.

The schedule and the carried tally are pure; the waits of many hours are replayed
through azure-functions-durable's own executor (tests/support/durable_history.py) on a
simulated clock, each against the same run played without a restart; one slow run
goes end to end on the local Durable Task engine with the sandbox.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.sample import EXPORT, RUN, TABLE, write_sample
from functions.orchestrator import segment_export
from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.tokens import tokens_secret
from shared.errors import ConfigError
from shared.exports.definitions import ExportDefinition
from shared.runs.activities import RunActivities
from shared.runs.bookkeeping import RunTally, Stage
from shared.runs.contract import CARRY, ORCHESTRATOR, RunInput, RunOptions, RunOutcome, RunStatus
from shared.runs.ids import iso, new_run_id
from shared.runs.membership import ListPlan, MembersResult, RemovalResult
from shared.runs.prepared import ChunkRef, PreparedRun
from shared.runs.uploads import ImportState, PollResult, UploadResult, UploadVerdict
from shared.runs.waits import BACKOFF, next_poll, poll_delay, polls_within
from shared.secrets.store import LocalFileSecretStore
from shared.wiring import clients
from shared.workstation.local_engine import RuntimeStatus
from shared.workstation.local_run import app_engine
from tests.support.ctct_support import FAST
from tests.support.durable_history import START, Clock, EventType, History, HostRun, run_by_replay
from tests.support.sample_emails import expected_emails
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.scripted_account import Account

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SEGMENT = ExportDefinition(list_ids=(LIST_ID,), mapping={"email": "Email"}, name="high-value")
SOURCE = "az://inbox/BlobExport/HighValueSegment/2026/11/28/0930"
UNBROKEN = 10_000
"""restart_after_tasks high enough that a run never continues as new: the reference."""
HISTORY_BOUND = 450
"""Events one generation's history may hold with the default options: about four per
activity or timer (scheduled, done, and the episode around it) for the 100 it may
schedule, plus the upload window or poll it finishes and the run's last steps."""


# --- the schedule -------------------------------------------------------------------


def test_polls_start_short_grow_half_again_each_time_and_stop_at_the_cap() -> None:
    options = RunOptions()  # 10 s, capped at 300 s

    delays = [poll_delay(options, polls) for polls in range(14)]

    assert delays[:4] == [10.0, 15.0, 22.5, 33.75]
    assert all(b == min(300.0, a * BACKOFF) for a, b in itertools.pairwise(delays))
    assert delays[8] == pytest.approx(256.29, abs=0.01)  # the last one under the cap
    assert delays[9:] == [300.0] * 5
    assert poll_delay(options, 10**9) == 300.0  # no overflow, however long the wait
    assert poll_delay(options, -1) == 10.0


def test_the_cap_never_makes_a_poll_shorter_than_poll_seconds() -> None:
    slow = RunOptions(poll_seconds=600)  # above the default cap of 300 s

    assert [poll_delay(slow, n) for n in range(3)] == [600.0] * 3


def test_the_next_poll_never_falls_past_the_deadline() -> None:
    options = RunOptions()
    deadline = START + timedelta(seconds=100)

    assert next_poll(START, options, 0) == START + timedelta(seconds=10)
    assert next_poll(START, options, 9, deadline) == deadline  # 300 s would overshoot it
    assert next_poll(START, options, 0, deadline) == START + timedelta(seconds=10)


def test_a_six_hour_wait_polls_79_times_where_fixed_polls_made_2160() -> None:
    six_hours = RunOptions().max_wait_seconds

    assert polls_within(RunOptions(), six_hours) == 79
    assert polls_within(RunOptions(max_poll_seconds=10), six_hours) == 2160  # no backoff


def test_the_new_options_are_checked() -> None:
    for bad in (
        {"max_poll_seconds": 0},
        {"restart_after_tasks": 0},
        {"restart_after_tasks": 10**6},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            RunOptions.from_json(bad)
    tuned = RunOptions.from_json({"max_poll_seconds": 60, "restart_after_tasks": 20})
    assert (tuned.max_poll_seconds, tuned.restart_after_tasks) == (60, 20)


# --- the carried tally --------------------------------------------------------------


DEFAULTS = RunOptions()


def run_input(options: RunOptions = DEFAULTS, export: ExportDefinition = SEGMENT) -> RunInput:
    return RunInput.create(
        "replay-run", export, SOURCE, trigger="blob", requested_at=START, options=options
    )


def busy_tally() -> RunTally:
    """A mirror run's tally in the middle of everything: chunks in every fate, polls
    made and failed, removals asked, both deadlines set."""
    mirror = replace(SEGMENT, mode="mirror")
    tally = RunTally(run_input(export=mirror), iso(START))
    chunks = tuple(ChunkRef(i, f"chunks/chunk-{i:05d}.json", 100, 20_000) for i in (3, 1, 2))
    tally.prepared_run(PreparedRun("replay-run", chunks=chunks, contacts=300, rejected=2))
    tally.members_found(MembersResult(lists=(ListPlan(LIST_ID, 100, 5),), requests=2))
    tally.uploaded(UploadResult(3, UploadVerdict.ACCEPTED, "activity-3", requests=1))
    tally.uploaded(UploadResult(1, UploadVerdict.ACCEPTED, "activity-1", requests=2, resends=1))
    tally.uploaded(UploadResult(2, UploadVerdict.REFUSED, requests=1, error="400 bad"))
    state = ImportState("activity-1", "completed", 100, 100, person_count=98)
    tally.polled(PollResult(imports=(state,), requests=1))
    tally.poll_failed()
    tally.wait_until(START + timedelta(seconds=42.5))
    tally.removals_asked(RemovalResult(("removal-1", "removal-2"), contacts=5, requests=1))
    tally.removals_polled(PollResult(imports=(ImportState("removal-1", "completed"),)))
    tally.removal_poll_failed()
    tally.removals_until(START + timedelta(hours=1))
    tally.stage, tally.phase, tally.tasks = Stage.REMOVE, tally.phase.WAITING, 37
    return tally


def test_a_tally_carried_as_json_is_the_same_tally() -> None:
    tally = busy_tally()

    carried = json.loads(json.dumps(tally.carry()))  # what the next generation is given
    again = RunTally.begin(carried, "2026-11-28T15:00:00Z")

    assert again.run == tally.run
    assert again.to_json() == tally.to_json()
    assert list(again.outcomes) == [3, 1, 2]  # polls ask about the imports in this order
    assert again.awaiting() == tally.awaiting() == ["activity-3"]
    assert again.removals_awaiting() == tally.removals_awaiting() == ["removal-2"]
    assert again.progress() == tally.progress()
    assert again.started_at == iso(START)  # the first generation's, not this one's
    assert again.tasks == 0  # the new generation's history starts empty
    assert again.finish_request("2026-11-28T16:00:00Z") == tally.finish_request(
        "2026-11-28T16:00:00Z"
    )


def test_a_first_generation_starts_afresh_and_a_continued_one_from_its_carry() -> None:
    fresh = RunTally.begin(run_input().to_json(), "2026-11-28T09:30:00Z")
    carried = busy_tally().carry()

    assert fresh.stage is Stage.PREPARE
    assert fresh.prepared is None
    assert RunInput.from_json(carried) == busy_tally().run  # still the run's own input
    assert RunTally.begin(carried, "later").stage is Stage.REMOVE


# --- replayed: waits of many hours ----------------------------------------------------


@dataclass
class SlowAccount(Account):
    """Imports stay ``processing`` until ``busy`` has gone by on the simulated clock."""

    clock: Clock = field(default_factory=Clock)
    busy: timedelta = timedelta(hours=5)

    def poll_imports(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self.polls.append(list(data["activity_ids"]))
        done = self.clock.now >= START + self.busy
        states = tuple(
            ImportState(a, "completed" if done else "processing", person_count=self.contacts_each)
            for a in data["activity_ids"]
        )
        return PollResult(imports=states, requests=1).to_json()


def play(account: Account, options: RunOptions, clock: Clock | None = None) -> HostRun:
    return run_by_replay(
        segment_export,
        run_input(options).to_json(),
        account,
        name="segment_export",
        max_episodes=5000,
        clock=clock,
    )


def play_slow(busy: timedelta, options: RunOptions = DEFAULTS) -> tuple[HostRun, SlowAccount]:
    clock = Clock()
    account = SlowAccount(clock=clock, busy=busy)
    return play(account, options, clock), account


def poll_timers(run: HostRun) -> list[tuple[datetime, datetime]]:
    """(created, due) of every timer, generation after generation."""
    timers: list[tuple[datetime, datetime]] = []
    for history in run.generations:
        for event in history.events:
            if event["EventType"] == EventType.TIMER_CREATED:
                created = datetime.strptime(event["Timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
                due = datetime.strptime(event["FireAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
                timers.append((created.replace(tzinfo=UTC), due.replace(tzinfo=UTC)))
    return timers


def scheduled(history: History) -> list[str]:
    return [e["Name"] for e in history.events if e["EventType"] == EventType.TASK_SCHEDULED]


Played = tuple[HostRun, SlowAccount]


@pytest.fixture(scope="module")
def five_hours() -> Played:
    """Imports that take five hours, default options: the run continues as new."""
    return play_slow(timedelta(hours=5))


def test_a_five_hour_wait_polls_67_times_in_two_short_histories(five_hours: Played) -> None:
    """Before: 1,800 polls every 10 s, one history of 14,430 events (30 + 8 a poll)."""
    run, account = five_hours

    assert run.final.output["status"] == "completed"
    assert len(account.polls) == 67
    intervals = [(due - created).total_seconds() for created, due in poll_timers(run)]
    assert len(intervals) == 67
    assert intervals[:3] == [10.0, 15.0, 22.5]
    assert intervals == pytest.approx([min(300.0, 10 * BACKOFF**n) for n in range(67)], abs=1e-5)
    sizes = [len(h.events) for h in run.generations]
    assert len(sizes) == 2  # it continued as new once
    assert max(sizes) <= HISTORY_BOUND
    assert sum(sizes) < 14_430 / 20
    # the second generation only polls and finishes: nothing prepared or sent again
    first, second = run.generations
    assert scheduled(first).count("prepare_segment") == 1
    assert set(scheduled(second)) == {"poll_imports", "finish_run"}
    assert [name for name, _ in run.calls].count("upload_chunk") == 5


def test_continue_as_new_hands_on_the_run_and_its_tally(five_hours: Played) -> None:
    run, _ = five_hours

    [handed] = run.continued
    assert RunInput.from_json(handed) == run_input()  # the same run, the same instance id
    carry = handed[CARRY]
    polls_before = scheduled(run.generations[0]).count("poll_imports")
    assert carry["stage"] == "wait"
    assert carry["phase"] == "waiting"
    assert carry["started_at"] == iso(START)
    assert carry["requests"]["status_polls"] == polls_before
    assert carry["requests"]["import_requests"] == 5
    assert [o["fate"] for o in carry["outcomes"]] == ["accepted"] * 5
    # the deadline set when the wait began: prepare, the look at the key's day and the
    # one upload window took a second each
    assert carry["wait_deadline"] == (START + timedelta(seconds=3, hours=6)).isoformat()
    # the new generation's first episode shows the same progress the last one left
    assert run.generations[1].events[1]["EventType"] == EventType.EXECUTION_STARTED


THREE_HOURS = RunOptions(max_wait_seconds=3 * 3600, restart_after_tasks=40)


@pytest.mark.parametrize("gives_up", [False, True], ids=["done-in-5h", "gives-up-at-3h"])
def test_a_run_that_continued_as_new_ends_as_an_unbroken_one(
    gives_up: bool, five_hours: Played
) -> None:
    busy, options = (timedelta(hours=4), THREE_HOURS) if gives_up else (timedelta(hours=5), None)
    restarted, restarted_account = play_slow(busy, options) if options else five_hours
    reference = replace(options or RunOptions(), restart_after_tasks=UNBROKEN)
    unbroken, unbroken_account = play_slow(busy, reference)

    assert len(restarted.generations) > 1
    assert len(unbroken.generations) == 1
    assert restarted.final.output == unbroken.final.output
    assert restarted.final.custom_status == unbroken.final.custom_status
    assert restarted_account.polls == unbroken_account.polls
    assert poll_timers(restarted) == poll_timers(unbroken)  # the same moments, to the µs
    [restarted_finish], [unbroken_finish] = restarted_account.finished, unbroken_account.finished
    assert replace(restarted_finish, run=unbroken_finish.run) == unbroken_finish
    assert max(len(h.events) for h in restarted.generations) <= HISTORY_BOUND
    if gives_up:
        assert restarted.final.output["status"] == "completed_with_errors"
        assert restarted.final.output["contacts_unconfirmed"] == 500
        # the last poll at the deadline, then no more
        assert len(restarted_account.polls) == polls_within(THREE_HOURS, 3 * 3600) == 43
        assert poll_timers(restarted)[-1][1] == START + timedelta(seconds=3, hours=3)


def test_uploads_that_wait_for_the_budget_continue_as_new_without_sending_again() -> None:
    options = RunOptions(upload_window=2, max_pending_imports=4, poll_seconds=30)
    small = replace(options, restart_after_tasks=5)
    restarted_account = Account(chunks=12, polls_to_finish=3)
    unbroken_account = Account(chunks=12, polls_to_finish=3)

    restarted = play(restarted_account, small)
    unbroken = play(unbroken_account, replace(options, restart_after_tasks=UNBROKEN))

    assert restarted.final.output == unbroken.final.output
    assert restarted.final.output["status"] == "completed"
    assert restarted.final.custom_status == unbroken.final.custom_status
    assert restarted_account.sent == unbroken_account.sent == list(range(1, 13))  # once each
    assert [name for name, _ in restarted.calls].count("prepare_segment") == 1
    assert "send" in [handed[CARRY]["stage"] for handed in restarted.continued]
    assert restarted_account.polls == unbroken_account.polls


# --- end to end on the local engine ---------------------------------------------------

ROWS = 2_000
BODY_BYTES = 40_000  # two chunks of the sample's addresses


def connect(sandbox: RunningSandbox, home: Path) -> None:
    """Store tokens as `ccexport connect` would, minted by the sandbox."""
    bundle = TokenBundle.from_response(sandbox.tokens(), time.time())

    async def store() -> None:
        async with LocalFileSecretStore(home) as secrets:
            await secrets.set(tokens_secret("default"), bundle.to_json())

    asyncio.run(store())


def test_on_the_local_engine_a_slow_run_continues_as_new_and_delivers_every_contact(
    sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    """Imports take two seconds; polls from 0.1 s, capped at 0.4 s; a generation
    continues as new after four activities and timers. ``ccexport run`` and ``serve``
    wait for a run as this test does (LocalEngine.wait)."""
    sandbox = sandbox_factory(rate_limit=0, activity_delay=2.0)
    list_id = sandbox.create_list()
    home = tmp_path / "home"
    connect(sandbox, home)
    sample = tmp_path / "sample"
    write_sample(sample, ROWS, parts=2, bad_every=97, duplicate_every=101)
    options = RunOptions(
        max_body_bytes=BODY_BYTES,
        poll_seconds=0.1,
        max_poll_seconds=0.4,
        retry_seconds=0.2,
        restart_after_tasks=4,
    )
    export = ExportDefinition(list_ids=(list_id,), mapping={"email": "PrimaryEmail"}, name="e2e")
    now = datetime.now(UTC)
    run = RunInput.create(
        new_run_id("e2e", now),
        export,
        str(sample / EXPORT / TABLE / RUN),
        requested_at=now,
        options=options,
    )
    services = replace(clients.run_services_from(cli_env(sandbox, home)), retry=FAST)
    activities = RunActivities(services)
    engine = app_engine(activity_concurrency=options.upload_window + 1, activities=activities)
    engine.on_close(activities.aclose)
    seen: list[dict[str, Any]] = []
    with engine:
        started = engine.start(ORCHESTRATOR, run.to_json(), instance_id=run.run_id)
        state = engine.wait(
            started.instance_id, 60.0, on_progress=lambda s: seen.append(s.custom_status)
        )

    assert state.status is RuntimeStatus.COMPLETED, state.failure
    assert state.instance_id == run.run_id
    assert CARRY in state.input  # the last generation was a continued one
    assert state.input[CARRY]["stage"] == "wait"
    outcome = RunOutcome.from_json(state.output)
    expected = expected_emails(sample)
    assert outcome.status is RunStatus.COMPLETED
    assert outcome.contacts_delivered == len(expected)
    assert sorted(sandbox.members(list_id)) == sorted(expected)
    report = services.runs.read_report(run.run_id)
    assert report is not None
    assert report["chunks"]["total"] == 2
    polls = [s["polls"] for s in seen if s]
    assert polls == sorted(polls)  # the count goes on across generations
    assert seen[-1]["status"] == "completed"
    assert seen[-1]["polls"] == report["requests"]["status_polls"] > 2


def test_the_command_line_waits_at_most_half_a_minute_between_checks_unless_told() -> None:
    """Someone watches `ccexport run`: its checks space out to 30 s, not the function
    app's 5 minutes; --max-poll-seconds says otherwise."""
    from shared.workstation.run_command import parser  # noqa: PLC0415 - the command's own

    args = parser().parse_args(["seg.csv", "--list-id", "x"])
    assert (args.poll_seconds, args.max_poll_seconds) == (2.0, 30.0)
    told = parser().parse_args(["seg.csv", "--poll-seconds", "5", "--max-poll-seconds", "120"])
    assert (told.poll_seconds, told.max_poll_seconds) == (5.0, 120.0)
    options = RunOptions(poll_seconds=2.0, max_poll_seconds=30.0)
    gaps = [poll_delay(options, polls) for polls in range(12)]
    assert gaps[0] == 2.0
    assert max(gaps) == 30.0
