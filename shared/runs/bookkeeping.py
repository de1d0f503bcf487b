"""The orchestrator's own bookkeeping: where a run stands between two steps.

``RunTally`` is rebuilt by the orchestrator on every replay from the activities'
results, so it is pure and deterministic (no clock, no I/O). It decides the run's
status, what the custom status says, and when mirror mode stops to ask.

A run that waits long continues as new: the tally goes to JSON (:meth:`RunTally.carry`)
as the next generation's input, and that generation rebuilds it
(:meth:`RunTally.begin`) and goes on from its :class:`Stage`, so what it reports
counts every generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.runs.contract import CARRY, FinishRequest, Phase, RunInput, RunOutcome, RunStatus
from shared.runs.estimate import estimate_requests
from shared.runs.ids import iso
from shared.runs.membership import ListPlan, MembersResult, RemovalResult, Removals
from shared.runs.prepared import Changes, ChunkRef, PreparedRun
from shared.runs.quota_plan import KeyDay, QuotaPlan
from shared.runs.uploads import (
    TERMINAL_IMPORT_STATES,
    ChunkFate,
    ChunkOutcome,
    PollResult,
    RequestCounts,
    UploadResult,
    UploadVerdict,
)
from shared.runs.waits import next_poll

_UNCONFIRMED = "unconfirmed"
_SETTLED = TERMINAL_IMPORT_STATES | {_UNCONFIRMED}
"""Removal states after which nothing more is asked (unconfirmed: waiting gave up)."""


class Stage(StrEnum):
    """The orchestrator's steps in order; a continued generation goes on from its stage."""

    PREPARE = "prepare"
    """Prepare the segment, and in mirror mode look at the lists."""
    QUOTA = "quota"
    """Weigh the run's requests against the key's day; wait for the reset if it is short."""
    SEND = "send"
    """Upload the chunks, polling while the pending-imports budget is full."""
    WAIT = "wait"
    """Poll until the accepted imports end, or the wait runs out."""
    REMOVE = "remove"
    """Mirror mode: remove the leavers, then poll until the removals end."""
    FINISH = "finish"
    """Write the report."""


_NEXT = {
    Stage.PREPARE: Stage.QUOTA,
    Stage.QUOTA: Stage.SEND,
    Stage.SEND: Stage.WAIT,
    Stage.WAIT: Stage.REMOVE,
    Stage.REMOVE: Stage.FINISH,
    Stage.FINISH: Stage.FINISH,
}


class RunTally:
    """Where a run stands: one object the orchestrator updates after each step.

    Pure and deterministic (no clock, no I/O), so the orchestrator can rebuild it on
    every replay; it also decides the run's status and what the custom status says.
    """

    def __init__(self, run: RunInput, started_at: str) -> None:
        self.run = run
        self.started_at = started_at
        self.stage = Stage.PREPARE
        self.phase = Phase.PREPARING
        self.prepared: PreparedRun | None = None
        self.outcomes: dict[int, ChunkOutcome] = {}
        self.error: str | None = None
        self.resets_at: str | None = None
        self.requests = RequestCounts()
        self.final: RunStatus | None = None
        self.poll_failures = 0
        """Status polls in a row that failed (after their retries)."""
        self.members: MembersResult | None = None
        self.removals: Removals | None = None
        self.removal_states: dict[str, str] = {}
        """Membership removal activity id -> its last known state."""
        self.confirmation: str | None = None
        self.stopped_because: str | None = None
        """Why the run was stopped before its end (shared/runs/recheck.py), if it was."""
        self.wait_deadline: str | None = None
        """When waiting for the imports gives up (ISO 8601), set when the wait begins."""
        self.removal_polls = 0
        """Status polls of the removals' membership activities (failed ones included)."""
        self.removal_poll_failures = 0
        """Removal polls in a row that failed (after their retries)."""
        self.removal_deadline: str | None = None
        """When waiting for the removals gives up (ISO 8601), set when that wait begins."""
        self.plan: QuotaPlan | None = None
        """The run's estimate of its requests and what it found of the key's day
        (shared/runs/quota_plan.py); None until it has one to weigh."""
        self.tasks = 0
        """Activities and timers this generation scheduled: what its history grows with.
        Never carried: each generation starts from nothing."""

    # -- generations -----------------------------------------------------------------

    @classmethod
    def begin(cls, data: Any, started_at: str) -> RunTally:
        """The tally of a run's first generation, or the one a continued generation was
        given (``started_at`` is then the first generation's, as carried)."""
        run = RunInput.from_json(data)
        carried = data.get(CARRY)
        return cls(run, started_at) if carried is None else cls.from_json(run, carried)

    def carry(self) -> dict[str, Any]:
        """The next generation's input: the run's own, and this tally under ``carry``."""
        return {**self.run.to_json(), CARRY: self.to_json()}

    def history_full(self) -> bool:
        """This generation has scheduled enough: it should continue as new."""
        return self.tasks >= self.run.options.restart_after_tasks

    def advance(self) -> None:
        """On to the next stage; a run that may not send goes from prepare to finish."""
        if self.stage is Stage.PREPARE and (self.stopped() or self.awaits_confirmation()):
            self.stage = Stage.FINISH
        else:
            self.stage = _NEXT[self.stage]

    def to_json(self) -> dict[str, Any]:
        """Everything a continued generation needs, but the run (it is the input itself)
        and ``tasks``. Outcomes keep their order: polls ask about imports in it."""
        return {
            "stage": self.stage.value,
            "started_at": self.started_at,
            "phase": self.phase.value,
            "prepared": None if self.prepared is None else self.prepared.to_json(),
            "outcomes": [o.to_json() for o in self.outcomes.values()],
            "error": self.error,
            "resets_at": self.resets_at,
            "requests": asdict(self.requests),
            "poll_failures": self.poll_failures,
            "wait_deadline": self.wait_deadline,
            "members": None if self.members is None else self.members.to_json(),
            "removals": None if self.removals is None else self.removals.to_json(),
            "removal_states": [[a, state] for a, state in self.removal_states.items()],
            "removal_polls": self.removal_polls,
            "removal_poll_failures": self.removal_poll_failures,
            "removal_deadline": self.removal_deadline,
            "confirmation": self.confirmation,
            "stopped_because": self.stopped_because,
            "plan": None if self.plan is None else self.plan.to_json(),
        }

    @classmethod
    def from_json(cls, run: RunInput, data: Mapping[str, Any]) -> RunTally:
        tally = cls(run, str(data["started_at"]))
        tally.stage = Stage(data["stage"])
        tally.phase = Phase(data["phase"])
        prepared, members, removals = data["prepared"], data["members"], data["removals"]
        tally.prepared = None if prepared is None else PreparedRun.from_json(prepared)
        outcomes = (ChunkOutcome.from_json(o) for o in data["outcomes"])
        tally.outcomes = {o.chunk.index: o for o in outcomes}
        tally.error = data["error"]
        tally.resets_at = data["resets_at"]
        tally.requests = RequestCounts(**data["requests"])
        tally.poll_failures = int(data["poll_failures"])
        tally.wait_deadline = data["wait_deadline"]
        tally.members = None if members is None else MembersResult.from_json(members)
        tally.removals = None if removals is None else Removals.from_json(removals)
        tally.removal_states = {str(a): str(state) for a, state in data["removal_states"]}
        tally.removal_polls = int(data["removal_polls"])
        tally.removal_poll_failures = int(data["removal_poll_failures"])
        tally.removal_deadline = data["removal_deadline"]
        tally.confirmation = data["confirmation"]
        tally.stopped_because = data["stopped_because"]
        tally.plan = QuotaPlan.from_json(data.get("plan"))
        return tally

    # -- waits -----------------------------------------------------------------------

    def wait_until(self, now: datetime) -> datetime:
        """The imports' deadline: ``max_wait_seconds`` after the wait began, kept as it
        was set so a continued generation waits no longer than an unbroken run."""
        if self.wait_deadline is None:
            self.wait_deadline = _later(now, self.run.options.max_wait_seconds)
        return datetime.fromisoformat(self.wait_deadline)

    def removals_until(self, now: datetime) -> datetime:
        """The removals' deadline, as :meth:`wait_until` for the imports."""
        if self.removal_deadline is None:
            self.removal_deadline = _later(now, self.run.options.max_wait_seconds)
        return datetime.fromisoformat(self.removal_deadline)

    def next_import_poll(self, now: datetime, deadline: datetime | None = None) -> datetime:
        """When to ask about the imports next: backing off with every poll of the run."""
        return next_poll(now, self.run.options, self.requests.status_polls, deadline)

    def next_removal_poll(self, now: datetime, deadline: datetime) -> datetime:
        """When to ask about the removals next: backing off with every removal poll."""
        return next_poll(now, self.run.options, self.removal_polls, deadline)

    # -- the daily quota --------------------------------------------------------------

    def plan_requests(self) -> QuotaPlan | None:
        """The run's estimate of its requests (shared/runs/estimate.py), told once when it
        is about to send; None when it will send nothing (nothing to weigh)."""
        if self.plan is None and (self.pending_chunks() or self.removals_due()):
            members = self.members
            self.plan = QuotaPlan(
                estimate_requests(
                    self.run.options,
                    bodies=len(self.pending_chunks()),
                    member_requests=members.requests if members else 0,
                    removals=[p.remove for p in members.lists] if members else (),
                )
            )
        return self.plan

    def quota_checked(self, day: KeyDay, now: datetime) -> datetime | None:
        """What the key's day is; returns when to ask again (the reset, on a timer of the
        time the reader's clock had left to it) if it cannot carry the run, else None
        and the run sends."""
        plan = self.plan
        assert plan is not None  # asked only once planned
        plan = plan.checked(day)
        if plan.carried_by(day):
            self.plan = replace(plan, resumes_at=None)
            self.phase = Phase.UPLOADING
            return None
        resume = _whole_second_after(now, max(day.resets_in, 1.0))
        self.plan = replace(
            plan,
            waits=plan.waits + 1,
            resumes_at=iso(resume),
            waited_since=plan.waited_since or iso(now),
        )
        self.phase = Phase.WAITING_FOR_QUOTA
        return resume

    def quota_unknown(self, why: str) -> None:
        """The key's day could not be read: the run sends without the check (the pacer
        still stops every request once Constant Contact says the quota is gone)."""
        if self.plan is not None:
            self.plan = replace(self.plan, resumes_at=None, error=why)
        self.phase = Phase.UPLOADING

    # -- steps ---------------------------------------------------------------------

    def prepared_run(self, prepared: PreparedRun) -> None:
        self.prepared = prepared
        if prepared.error is not None:
            self.fail(prepared.error)
            return
        self.outcomes = {c.index: ChunkOutcome(c) for c in prepared.chunks}
        self.phase = Phase.UPLOADING

    def fail(self, error: str) -> None:
        self.error = error

    # -- mirror mode -----------------------------------------------------------------

    @property
    def changes(self) -> Changes:
        return self.prepared.changes if self.prepared else Changes()

    def mirror(self) -> bool:
        return self.changes.mode == "mirror"

    def needs_members(self) -> bool:
        """Look at the lists before sending: a mirror run with joiners or leavers."""
        return self.mirror() and self.changes.needs_members and not self.stopped()

    def check_empty_segment(self) -> None:
        """A mirror run whose segment came empty after a non-empty one stops to ask."""
        prepared, changes = self.prepared, self.changes
        if (
            self.mirror()
            and not self.stopped()
            and prepared is not None
            and prepared.contacts == 0
            and changes.previous_contacts > 0
            and not self.run.options.confirm_removals
        ):
            self.confirmation = (
                f"the segment is empty but the last run sent {changes.previous_contacts:,} "
                "contacts: in mirror mode this would remove every member this export added. "
                f"Check the file; to go ahead, {self._confirm_hint()}"
            )

    def members_found(self, result: MembersResult) -> None:
        self.members = result
        self._count(member_requests=result.requests)
        if result.resets_at is not None:
            self.quota_exhausted(result.resets_at)
            return
        if result.error is not None:
            self.fail(f"the lists' members could not be read, so nothing was sent: {result.error}")
            return
        limit = self.run.definition().max_removal_share
        over = [p for p in result.lists if p.share() > limit]
        if over and not self.run.options.confirm_removals:
            worst = max(over, key=ListPlan.share)
            self.confirmation = (
                f"this mirror run would remove {worst.remove:,} of the {worst.members:,} "
                f"members of list {worst.list_id} ({worst.share():.0%}), more than the "
                f"{limit:.0%} allowed (max_removal_share): a truncated or wrong file? Nothing "
                f"was sent or removed. To go ahead, {self._confirm_hint()}"
            )

    def _confirm_hint(self) -> str:
        run_id = self.run.run_id
        return (
            f"start run {run_id} again with confirm_removals (ccexport run ... --run-id "
            f'{run_id} --confirm-removals, or POST .../runs with {{"confirm_removals": true}})'
        )

    def awaits_confirmation(self) -> bool:
        return self.confirmation is not None

    def removals_due(self) -> bool:
        return (
            self.members is not None
            and self.members.removals > 0
            and self.removals is None
            and not self.stopped()
            and not self.awaits_confirmation()
        )

    def removals_asked(self, result: RemovalResult) -> None:
        planned = self.members.removals if self.members else 0
        self.removals = Removals(
            planned=planned,
            asked=result.contacts,
            activities=len(result.activity_ids),
            error=result.error,
        )
        self.removal_states = {a: "" for a in result.activity_ids}
        self._count(removal_requests=result.requests)
        if result.resets_at is not None:
            self.quota_exhausted(result.resets_at)

    def removals_failed(self, error: str) -> None:
        planned = self.members.removals if self.members else 0
        self.removals = Removals(planned, error=error)

    def removals_awaiting(self) -> list[str]:
        """Removal activities still to be asked about: not finished, and not given up on."""
        return [a for a, state in self.removal_states.items() if state not in _SETTLED]

    def removals_polled(self, result: PollResult) -> None:
        self.removal_polls += 1
        self._count(removal_poll_requests=result.requests)
        self.removal_poll_failures = 0
        if result.stopped:
            self.removals_unconfirmed(result.error or "the run was stopped")
            return
        if result.resets_at is not None:
            self.quota_exhausted(result.resets_at)
        for state in result.imports:
            if state.activity_id in self.removal_states:
                self.removal_states[state.activity_id] = state.state
        if self.removals is not None:
            done = sum(1 for s in self.removal_states.values() if s == "completed")
            failed = [
                s
                for s in self.removal_states.values()
                if s in TERMINAL_IMPORT_STATES - {"completed"}
            ]
            error = self.removals.error or (
                f"{len(failed)} removal activit{'y' if len(failed) == 1 else 'ies'} ended "
                + ", ".join(sorted(set(failed)))
                if failed
                else None
            )
            self.removals = replace(self.removals, activities_completed=done, error=error)

    def removal_poll_failed(self) -> None:
        """A removal poll failed for good; the removals may still be running."""
        self.removal_polls += 1
        self.removal_poll_failures += 1

    def removals_unconfirmed(self, why: str) -> None:
        if self.removals is not None and self.removals_awaiting():
            self.removals = replace(self.removals, error=self.removals.error or why)
        self.removal_states = {
            a: (s if s in TERMINAL_IMPORT_STATES else _UNCONFIRMED)
            for a, s in self.removal_states.items()
        }

    def uploaded(self, result: UploadResult) -> None:
        outcome = self.outcomes[result.index]
        self.requests = replace(
            self.requests,
            import_requests=self.requests.import_requests + result.requests,
            import_resends=self.requests.import_resends + result.resends,
        )
        requests = outcome.upload_requests + result.requests
        if result.verdict is UploadVerdict.ACCEPTED:
            self.outcomes[result.index] = replace(
                outcome,
                fate=ChunkFate.ACCEPTED,
                activity_id=result.activity_id,
                already_accepted=result.already_accepted,
                upload_requests=requests,
            )
        elif result.verdict is UploadVerdict.QUOTA_EXHAUSTED:
            self.outcomes[result.index] = replace(
                outcome, fate=ChunkFate.NOT_SENT, upload_requests=requests, error=result.error
            )
            self.quota_exhausted(result.resets_at)
        elif result.verdict is UploadVerdict.STOPPED:
            self.stop(result.error or "the run was stopped")
        else:
            self.outcomes[result.index] = replace(
                outcome, fate=ChunkFate.UPLOAD_FAILED, upload_requests=requests, error=result.error
            )

    def _count(self, **more: int) -> None:
        counts = self.requests
        self.requests = replace(counts, **{k: getattr(counts, k) + n for k, n in more.items()})

    def upload_failed(self, index: int, error: str) -> None:
        """The upload activity failed for good (after its retries)."""
        self.outcomes[index] = replace(
            self.outcomes[index], fate=ChunkFate.UPLOAD_FAILED, error=error
        )

    def stop(self, why: str) -> None:
        """The run may not go on (shared/runs/recheck.py): nothing more is sent, and the
        chunks not sent yet are reported with the reason."""
        self.error = self.error or why
        self.stopped_because = self.stopped_because or why
        for index, outcome in self.outcomes.items():
            if outcome.fate is ChunkFate.PENDING:
                self.outcomes[index] = replace(outcome, fate=ChunkFate.NOT_SENT, error=why)

    def quota_exhausted(self, resets_at: str | None) -> None:
        self.resets_at = resets_at or self.resets_at or "the next 00:00 UTC"
        for index, outcome in self.outcomes.items():
            if outcome.fate is ChunkFate.PENDING:
                self.outcomes[index] = replace(
                    outcome, fate=ChunkFate.NOT_SENT, error="daily request quota exhausted"
                )

    def polled(self, result: PollResult) -> None:
        requests = self.requests
        self.requests = replace(
            requests,
            status_polls=requests.status_polls + 1,
            poll_requests=requests.poll_requests + result.requests,
            polls_in_one_request=requests.polls_in_one_request + (result.requests == 1),
        )
        self.poll_failures = 0
        if result.stopped:
            why = result.error or "the run was stopped"
            self.stop(why)
            self.stop_waiting(why)
            return
        by_id = {state.activity_id: state for state in result.imports}
        for index, outcome in self.outcomes.items():
            state = by_id.get(outcome.activity_id or "")
            if state is None or outcome.fate is not ChunkFate.ACCEPTED:
                continue
            fate = ChunkFate.ACCEPTED
            error = None
            if state.state == "completed":
                fate = ChunkFate.IMPORTED
            elif state.done:
                fate = ChunkFate.IMPORT_FAILED
                error = f"the import ended {state.state}"
            self.outcomes[index] = replace(outcome, fate=fate, import_state=state, error=error)
        if result.resets_at is not None:
            self.quota_exhausted(result.resets_at)

    def poll_failed(self) -> None:
        """A status poll failed for good; the imports may still be running."""
        self.poll_failures += 1
        self.requests = replace(self.requests, status_polls=self.requests.status_polls + 1)

    def stop_waiting(self, why: str) -> None:
        """No more polls: imports still running are reported unconfirmed."""
        for index, outcome in self.outcomes.items():
            if outcome.fate is ChunkFate.ACCEPTED:
                self.outcomes[index] = replace(outcome, fate=ChunkFate.UNCONFIRMED, error=why)

    # -- questions -----------------------------------------------------------------

    def stopped(self) -> bool:
        """Nothing more may be sent: the input failed or the quota is gone."""
        return self.error is not None or self.resets_at is not None

    def pending_chunks(self) -> list[ChunkRef]:
        return [o.chunk for o in self.outcomes.values() if o.fate is ChunkFate.PENDING]

    def awaiting(self) -> list[str]:
        """Activity ids of accepted imports that have not finished."""
        return [
            o.activity_id
            for o in self.outcomes.values()
            if o.fate is ChunkFate.ACCEPTED and o.activity_id is not None
        ]

    def _contacts(self, chunks: Iterable[ChunkOutcome]) -> int:
        return sum(o.chunk.contacts for o in chunks)

    def _halted(self) -> RunStatus | None:
        """The status of a run that stopped before its end, whatever went: stopped, out
        of quota, or waiting for confirmation; None for a run that got to its end."""
        if self.stopped_because is not None:
            return RunStatus.STOPPED
        if self.resets_at is not None:
            return RunStatus.QUOTA_EXHAUSTED
        if self.confirmation is not None:
            return RunStatus.NEEDS_CONFIRMATION
        return None

    def status(self) -> RunStatus:
        halted = self._halted()
        if halted is not None:
            return halted
        outcomes = list(self.outcomes.values())
        went = [o for o in outcomes if not o.fate.lost and o.fate is not ChunkFate.PENDING]
        if self.removals is not None and not self.removals.done:
            return (
                RunStatus.COMPLETED_WITH_ERRORS if went or self.removals.asked else RunStatus.FAILED
            )
        if not went and (self.error is not None or outcomes):
            return RunStatus.FAILED  # nothing was sent, or everything sent was refused
        if self.error is not None or any(not o.fate.delivered or o.shortfall for o in outcomes):
            return RunStatus.COMPLETED_WITH_ERRORS
        return RunStatus.COMPLETED

    def progress(self) -> dict[str, Any]:
        """The custom status."""
        outcomes = list(self.outcomes.values())
        final = {ChunkFate.IMPORTED, ChunkFate.IMPORT_FAILED}
        failed = [o for o in outcomes if o.fate.lost or o.fate is ChunkFate.UNCONFIRMED]
        return {
            "phase": self.phase.value,
            "run_id": self.run.run_id,
            "status": None if self.final is None else self.final.value,
            "chunks_total": len(outcomes),
            "chunks_uploaded": sum(1 for o in outcomes if o.activity_id is not None),
            "chunks_done": sum(1 for o in outcomes if o.fate in final),
            "chunks_failed": len(failed),
            "contacts_total": self._contacts(outcomes),  # to send: unchanged ones are not
            "contacts_sent": self._contacts(o for o in outcomes if o.activity_id is not None),
            "contacts_done": self._contacts(o for o in outcomes if o.fate.delivered),
            "polls": self.requests.status_polls,
            "started_at": self.started_at,
            "requests_estimated": None if self.plan is None else self.plan.estimate.total,
            "resumes_at": self.plan.resumes_at if self.plan is not None else None,
        }

    def finish_request(self, finished_at: str) -> FinishRequest:
        if self.confirmation is not None:
            for index, outcome in self.outcomes.items():
                if outcome.fate is ChunkFate.PENDING:
                    why = "not sent: the run waits for confirmation"
                    self.outcomes[index] = replace(outcome, error=why)
        self.final = self.status()
        self.phase = Phase.FINISHING
        return FinishRequest(
            run=self.run,
            status=self.final,
            started_at=self.started_at,
            finished_at=finished_at,
            prepared=self.prepared,
            outcomes=tuple(self.outcomes[i] for i in sorted(self.outcomes)),
            requests=self.requests,
            error=self.error,
            resets_at=self.resets_at,
            members=self.members,
            removals=self.removals,
            confirmation=self.confirmation,
            plan=self.plan,
        )

    def outcome(self, report: str | None) -> RunOutcome:
        self.phase = Phase.DONE
        outcomes = list(self.outcomes.values())
        status = self.final or self.status()
        short = sum(o.shortfall for o in outcomes)
        return RunOutcome(
            run_id=self.run.run_id,
            status=status,
            contacts_total=self.prepared.contacts if self.prepared else 0,
            contacts_delivered=self._contacts(o for o in outcomes if o.fate.delivered) - short,
            contacts_not_delivered=self._contacts(o for o in outcomes if o.fate.lost) + short,
            contacts_unconfirmed=self._contacts(
                o for o in outcomes if o.fate in (ChunkFate.UNCONFIRMED, ChunkFate.ACCEPTED)
            ),
            report=report,
            resume_after=self.resets_at if status is RunStatus.QUOTA_EXHAUSTED else None,
        )


def _whole_second_after(now: datetime, seconds: float) -> datetime:
    """``seconds`` after ``now``, rounded up to a whole second: never before the reset."""
    moment = now + timedelta(seconds=seconds)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


def _later(now: datetime, seconds: float) -> str:
    return (now + timedelta(seconds=seconds)).isoformat()
