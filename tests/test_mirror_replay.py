"""segment_export's incremental and mirror paths, replayed through azure-functions-durable.

The scripted account of tests/support/scripted_account.py, taught the two mirror
activities: ``find_members`` answers with a plan (members and removals per list) and
``apply_removals`` with membership activities that the status polls then finish.
Every episode is replayed and checked for determinism (tests/support/durable_history.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from functions.orchestrator import segment_export
from shared.exports.definitions import ExportDefinition
from shared.runs.contract import RunInput, RunOptions, RunStatus
from shared.runs.membership import ListPlan, MembersResult, RemovalResult
from shared.runs.prepared import Changes, PreparedRun
from shared.runs.uploads import ImportState, PollResult
from tests.support.durable_history import (
    START,
    EventType,
    HostRun,
    parse_timestamp,
    run_by_replay,
)
from tests.support.scripted_account import Account

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
MIRROR = ExportDefinition(
    list_ids=(LIST_ID,), mapping={"email": "Email"}, name="high-value", mode="mirror"
)
OPTIONS = RunOptions(upload_window=2, poll_seconds=30, attempts=2, retry_seconds=5)


@dataclass
class MirrorAccount(Account):
    changes: Changes = field(
        default_factory=lambda: Changes(mode="mirror", incremental=True, needs_members=True)
    )
    plan: tuple[ListPlan, ...] = (ListPlan(LIST_ID, members=100, remove=5),)
    member_failures: int = 0
    removal_polls_to_finish: int = 1
    removal_poll_answer: PollResult | None = None
    """Answered to every removal poll instead of a state (an exhausted quota, a stop)."""
    called: list[str] = field(default_factory=list)
    removal_polls: list[list[str]] = field(default_factory=list)

    def prepare_segment(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self.called.append("prepare_segment")
        prepared = PreparedRun.from_json(super().prepare_segment(data))
        return replace(prepared, changes=self.changes).to_json()

    def find_members(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self.called.append("find_members")
        if self.member_failures:
            self.member_failures -= 1
            raise ConnectionError("contact export failed")
        return MembersResult(lists=self.plan, requests=3, via="contact_export").to_json()

    def upload_chunk(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self.called.append("upload_chunk")
        return super().upload_chunk(data)

    def apply_removals(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self.called.append("apply_removals")
        removals = sum(p.remove for p in self.plan)
        return RemovalResult(("removal-1",), contacts=removals, requests=1).to_json()

    def poll_imports(self, data: Mapping[str, Any]) -> dict[str, Any]:
        ids = list(data["activity_ids"])
        if ids != ["removal-1"]:
            return super().poll_imports(data)
        self.removal_polls.append(ids)
        if self.removal_poll_answer is not None:
            return self.removal_poll_answer.to_json()
        done = len(self.removal_polls) >= self.removal_polls_to_finish
        state = ImportState("removal-1", "completed" if done else "processing")
        return PollResult(imports=(state,), requests=1).to_json()


def run_input(options: RunOptions = OPTIONS, export: ExportDefinition = MIRROR) -> dict[str, Any]:
    return RunInput.create(
        "replay-mirror", export, "az://inbox/BlobExport/HighValueSegment/2026/11/28/0930",
        trigger="blob", requested_at=START, options=options,
    ).to_json()  # fmt: skip


def play(account: MirrorAccount, options: RunOptions = OPTIONS) -> HostRun:
    return run_by_replay(segment_export, run_input(options), account, name="segment_export")


def test_mirror_run_looks_at_the_lists_first_then_imports_then_removes() -> None:
    account = MirrorAccount(chunks=3, removal_polls_to_finish=2)

    run = play(account)

    assert run.final.output["status"] == "completed"
    order = [name for name in account.called if name != "upload_chunk"]
    assert order == ["prepare_segment", "find_members", "apply_removals"]
    first_upload = account.called.index("upload_chunk")
    assert account.called.index("find_members") < first_upload
    assert account.called.index("apply_removals") > len(account.called) - 2
    assert account.removal_polls == [["removal-1"]] * 2  # polled until completed
    [finish] = account.finished
    assert finish.removals is not None
    assert (finish.removals.planned, finish.removals.asked) == (5, 5)
    assert finish.removals.done
    assert finish.members is not None
    assert finish.members.lists == account.plan


def test_a_long_removal_wait_backs_off_from_short_and_continues_as_new() -> None:
    """The removals are polled on their own count: the wait starts short again after the
    imports' polls, backs off to the cap, and continues as new without asking twice."""
    options = replace(OPTIONS, poll_seconds=10, max_poll_seconds=60, restart_after_tasks=12)
    restarted_account = MirrorAccount(chunks=2, polls_to_finish=4, removal_polls_to_finish=12)
    unbroken_account = MirrorAccount(chunks=2, polls_to_finish=4, removal_polls_to_finish=12)

    restarted = play(restarted_account, options)
    unbroken = play(unbroken_account, replace(options, restart_after_tasks=10_000))

    assert restarted.final.output == unbroken.final.output
    assert restarted.final.output["status"] == "completed"
    assert restarted.final.custom_status == unbroken.final.custom_status
    assert restarted_account.called.count("apply_removals") == 1
    assert restarted_account.called.count("prepare_segment") == 1
    assert "remove" in [handed["carry"]["stage"] for handed in restarted.continued]
    assert len(restarted_account.removal_polls) == 12
    timers = [
        (parse_timestamp(e["FireAt"]) - parse_timestamp(e["Timestamp"])).total_seconds()
        for h in restarted.generations
        for e in h.events
        if e["EventType"] == EventType.TIMER_CREATED
    ]
    assert timers[:4] == [10.0, 15.0, 22.5, 33.75]  # the imports' four polls
    assert timers[4:] == [10.0, 15.0, 22.5, 33.75, 50.625] + [60.0] * 7  # the removals'
    [restarted_finish], [unbroken_finish] = restarted_account.finished, unbroken_account.finished
    assert replace(restarted_finish, run=unbroken_finish.run) == unbroken_finish


@pytest.mark.parametrize(
    "answer",
    [
        PollResult(error="daily quota", resets_at="2026-11-29T00:00:00Z"),
        PollResult(error="connection 'acme' was removed after the run started", stopped=True),
    ],
    ids=["quota", "stopped"],
)
def test_a_removal_wait_given_up_on_ends_the_run(answer: PollResult) -> None:
    """Removals left unconfirmed are no longer waited for: the run ends after one poll."""
    account = MirrorAccount(chunks=2, removal_poll_answer=answer)

    run = play(account)

    assert run.final.output["status"] in ("quota_exhausted", "completed_with_errors")
    assert account.removal_polls == [["removal-1"]]
    [finish] = account.finished
    assert finish.removals is not None
    assert not finish.removals.done


def test_too_large_a_removal_stops_before_anything_is_sent() -> None:
    account = MirrorAccount(chunks=3, plan=(ListPlan(LIST_ID, members=100, remove=21),))

    run = play(account)

    assert run.final.output["status"] == RunStatus.NEEDS_CONFIRMATION.value
    assert account.called == ["prepare_segment", "find_members"]  # no upload, no removal
    [finish] = account.finished
    assert finish.confirmation is not None
    assert "21 of the 100" in finish.confirmation
    assert "max_removal_share" in finish.confirmation


def test_removing_exactly_the_allowed_share_goes_ahead_and_one_more_stops() -> None:
    for share, members, allowed in ((0.2, 100, 20), (0.2, 10, 2), (0.25, 8, 2), (0.5, 7, 3)):
        export = replace(MIRROR, max_removal_share=share)
        for remove, stops in ((allowed, False), (allowed + 1, True)):
            account = MirrorAccount(chunks=2, plan=(ListPlan(LIST_ID, members, remove),))

            run = run_by_replay(
                segment_export, run_input(export=export), account, name="segment_export"
            )

            [finish] = account.finished
            if stops:
                assert run.final.output["status"] == "needs_confirmation", (share, remove)
                assert account.called == ["prepare_segment", "find_members"]
                assert finish.confirmation is not None
                assert f"remove {remove:,} of the {members:,} members" in finish.confirmation
                assert f"more than the {share:.0%} allowed" in finish.confirmation
            else:
                assert run.final.output["status"] == "completed", (share, remove)
                assert "apply_removals" in account.called
                assert finish.confirmation is None
                assert finish.removals is not None
                assert finish.removals.asked == remove


def test_an_empty_segment_stops_only_a_mirror_run_after_a_non_empty_one() -> None:
    def ends(changes: Changes, export: ExportDefinition = MIRROR, **options: Any) -> str:
        account = MirrorAccount(chunks=0, changes=changes, plan=())
        run = run_by_replay(
            segment_export,
            run_input(replace(OPTIONS, **options), export),
            account,
            name="segment_export",
        )
        status: str = run.final.output["status"]
        return status

    after_one = Changes(mode="mirror", incremental=True, previous_contacts=1, needs_members=True)
    assert ends(after_one) == "needs_confirmation"
    assert ends(after_one, confirm_removals=True) == "completed"
    never_sent = Changes(mode="mirror", incremental=False, previous_contacts=0)
    assert ends(never_sent) == "completed"  # nothing was sent before: nothing to lose
    added = Changes(mode="add", incremental=True, previous_contacts=40)
    assert ends(added, replace(MIRROR, mode="add")) == "completed"  # add mode never removes


def test_a_confirmed_run_removes_past_the_share() -> None:
    account = MirrorAccount(chunks=1, plan=(ListPlan(LIST_ID, members=100, remove=90),))

    run = play(account, replace(OPTIONS, confirm_removals=True))

    assert run.final.output["status"] == "completed"
    assert "apply_removals" in account.called


def test_an_empty_segment_after_a_full_one_stops_without_looking() -> None:
    changes = Changes(mode="mirror", incremental=True, previous_contacts=40, needs_members=True)
    account = MirrorAccount(chunks=0, changes=changes)

    run = play(account)

    assert run.final.output["status"] == "needs_confirmation"
    assert account.called == ["prepare_segment"]
    [finish] = account.finished
    assert finish.confirmation is not None
    assert "segment is empty" in finish.confirmation


def test_an_unchanged_segment_goes_straight_to_the_report() -> None:
    changes = Changes(mode="mirror", incremental=True, unchanged=500, content_unchanged=True)
    account = MirrorAccount(chunks=0, changes=changes)

    run = play(account)

    assert run.final.output["status"] == "completed"
    assert account.called == ["prepare_segment"]  # no members, no upload, no removal
    assert run.final.custom_status["chunks_total"] == 0


def test_members_that_cannot_be_read_stop_the_run_before_sending() -> None:
    account = MirrorAccount(chunks=2, member_failures=5)

    run = play(account)

    assert run.final.output["status"] == "failed"
    assert "upload_chunk" not in account.called
    [finish] = account.finished
    assert finish.error is not None
    assert "members could not be read" in finish.error


def test_add_mode_never_looks_at_the_lists() -> None:
    account = MirrorAccount(chunks=2, changes=Changes(mode="add", needs_members=False))

    run = run_by_replay(
        segment_export,
        run_input(export=replace(MIRROR, mode="add")),
        account,
        name="segment_export",
    )

    assert run.final.output["status"] == "completed"
    assert "find_members" not in account.called
    assert "apply_removals" not in account.called
