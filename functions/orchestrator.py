"""The export run as a durable orchestration: ``segment_export``.

Prepare, then upload the chunks in bounded windows (each upload retried by Durable),
then wait on durable timers and ask about every pending import with one status poll
at a time, then finish with the report. Deterministic on purpose: no I/O, no clock
but the context's, no settings; it carries references and counts only (shared/runs/bookkeeping.py
keeps the tally, shared/runs/activities.py does the work).

Waits stay small. The timers between polls lengthen as the polls add up, to a cap
(shared/runs/waits.py), and a generation that has scheduled ``restart_after_tasks``
activities and timers continues as new at its next upload window or poll, handing the
next generation its tally (``RunTally.carry``): that one goes on from the same stage,
with its own short history, and what the run reports counts every generation.

Before it sends, the run weighs its requests against the API key's day
(shared/runs/quota_plan.py): it estimates them (shared/runs/estimate.py), asks
``quota_left`` what is left of the daily quota, and when that cannot carry the
estimate it sends nothing yet: its status says ``waiting_for_quota`` and when it
resumes, a durable timer waits for the reset (00:00 UTC), and it asks again. One
activity and one timer per reset waited for, so that history stays small.

A chunk that fails does not stop the others: the run ends ``completed_with_errors``
and the report names the contacts that did not go. A daily quota exhausted all the
same (other traffic of the key, an estimate exceeded) stops further uploads; the run
ends ``quota_exhausted`` and can be started again with the same run id after 00:00 UTC.

Only new and changed contacts are in the chunks; an unchanged segment has none, and
the run goes straight to its report. In mirror mode, when there are joiners or
leavers, ``find_members`` looks at the lists before anything is sent; a plan that
would remove more than the definition's share of a list (or an empty segment) ends
the run ``needs_confirmation`` with nothing sent. Otherwise, once the imports are
done, ``apply_removals`` removes the leavers and their membership activities are
polled like imports.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from azure.durable_functions import Blueprint, RetryOptions

from functions.activities import (
    APPLY_REMOVALS,
    FIND_MEMBERS,
    FINISH_RUN,
    POLL_IMPORTS,
    PREPARE_SEGMENT,
    QUOTA_LEFT,
    UPLOAD_CHUNK,
)
from shared.runs.bookkeeping import RunTally, Stage
from shared.runs.contract import Phase
from shared.runs.ids import iso
from shared.runs.membership import MembersResult, RemovalResult
from shared.runs.prepared import ChunkRef, PreparedRun
from shared.runs.quota_plan import KeyDay
from shared.runs.uploads import PollRequest, PollResult, UploadRequest, UploadResult

bp = Blueprint()

MAX_POLL_FAILURES = 5
"""Status polls in a row that may fail (each after its retries) before waiting stops."""

Steps = Generator[Any, Any, bool]
"""A stage of the run; it ends True when the generation's history is full (the run
continues as new and the next generation does the rest of the stage)."""


def failure_reason(exc: Exception) -> str:
    """The first line of an activity failure: the same text on Azure and locally."""
    return str(exc).split(" \n ", 1)[0]


def segment_export(context: Any) -> Generator[Any, Any, dict[str, Any] | None]:
    tally = RunTally.begin(context.get_input(), iso(context.current_utc_datetime))
    options = tally.run.options
    retry = RetryOptions(int(options.retry_seconds * 1000), options.attempts)
    context.set_custom_status(tally.progress())
    if tally.stage is Stage.PREPARE:
        yield from _prepare(context, tally, retry)
        tally.advance()
    stages = (
        (Stage.QUOTA, _plan),
        (Stage.SEND, _upload),
        (Stage.WAIT, _wait),
        (Stage.REMOVE, _remove),
    )
    for stage, steps in stages:
        if tally.stage is stage:
            if (yield from steps(context, tally, retry)):
                # This generation's history has grown long: the next one goes on from
                # the tally, under the same instance id, with a history of its own.
                context.continue_as_new(tally.carry())
                return None
            tally.advance()
    finish = tally.finish_request(iso(context.current_utc_datetime))
    context.set_custom_status(tally.progress())
    finished = yield _activity(context, tally, FINISH_RUN, retry, finish.to_json())
    outcome = tally.outcome(finished["report"])
    context.set_custom_status(tally.progress())
    return outcome.to_json()


def _activity(context: Any, tally: RunTally, name: object, retry: RetryOptions, input_: Any) -> Any:
    """Schedule an activity (retried by Durable), counted in this generation's history."""
    tally.tasks += 1
    return context.call_activity_with_retry(name, retry, input_)


def _timer(context: Any, tally: RunTally, fire_at: datetime) -> Any:
    """A durable timer, counted in this generation's history."""
    tally.tasks += 1
    return context.create_timer(fire_at)


def _prepare(context: Any, tally: RunTally, retry: RetryOptions) -> Generator[Any, Any, None]:
    """Prepare the segment; in mirror mode with joiners or leavers, look at the lists."""
    run = tally.run
    try:
        prepared = yield _activity(context, tally, PREPARE_SEGMENT, retry, run.to_json())
        tally.prepared_run(PreparedRun.from_json(prepared))
    except Exception as exc:
        tally.fail(failure_reason(exc))
    tally.check_empty_segment()
    if tally.needs_members() and not tally.awaits_confirmation():
        try:
            found = yield _activity(context, tally, FIND_MEMBERS, retry, run.to_json())
            tally.members_found(MembersResult.from_json(found))
        except Exception as exc:
            tally.fail(f"the lists' members could not be read: {failure_reason(exc)}")
    context.set_custom_status(tally.progress())


def _plan(context: Any, tally: RunTally, retry: RetryOptions) -> Steps:
    """Send only when the key's day can carry the run's estimate; else wait for the reset.

    Asked again after every reset: a run that finds the new day already taken by others
    waits for the next. The record holds counts, not promises, so runs that ask at the
    same moment may each find room that together they overrun. A run estimated at more
    than a whole day's quota goes at once (no reset makes room for it).
    """
    if tally.plan_requests() is None:
        return False  # nothing to send
    while True:
        if tally.history_full():
            return True
        try:
            day = yield _activity(context, tally, QUOTA_LEFT, retry, {"run_id": tally.run.run_id})
        except Exception as exc:
            tally.quota_unknown(f"the API key's day could not be read: {failure_reason(exc)}")
            break
        resume = tally.quota_checked(KeyDay.from_json(day), context.current_utc_datetime)
        if resume is None:
            break
        context.set_custom_status(tally.progress())
        yield _timer(context, tally, resume)
    context.set_custom_status(tally.progress())
    return False


def _upload_request(tally: RunTally, chunk: ChunkRef) -> dict[str, Any]:
    run = tally.run
    return UploadRequest(run.run_id, run.connection, chunk, run.scope).to_json()


def _upload(context: Any, tally: RunTally, retry: RetryOptions) -> Steps:
    """Send every staged chunk, a window at a time, within the activity-queue budget."""
    options = tally.run.options
    while not tally.stopped():
        window = tally.pending_chunks()[: options.upload_window]
        if not window:
            break
        while len(tally.awaiting()) + len(window) > options.max_pending_imports:
            # Constant Contact queues at most 1,000 activities per account: let some finish.
            if tally.history_full():
                return True
            yield from _poll(context, tally, retry)
            if tally.stopped() or tally.poll_failures >= MAX_POLL_FAILURES:
                return False
        if tally.history_full():
            return True
        yield from _send(context, tally, retry, window)
        context.set_custom_status(tally.progress())
    return False


def _send(
    context: Any, tally: RunTally, retry: RetryOptions, window: list[ChunkRef]
) -> Generator[Any, Any, None]:
    """Upload one window of chunks at once."""
    uploads = [
        _activity(context, tally, UPLOAD_CHUNK, retry, _upload_request(tally, chunk))
        for chunk in window
    ]
    try:
        results = yield context.task_all(uploads)
    except Exception:
        results = None
    if results is not None:
        for result in results:
            tally.uploaded(UploadResult.from_json(result))
        return
    # One upload failed for good, and task_all tells no more. Ask again one by one: a
    # chunk that was accepted answers from its mark without sending. (On Azure task_all
    # fails at once; a sibling still sending then may be sent twice, which Constant
    # Contact takes as an update of the same people.)
    for chunk in window:
        if tally.stopped():
            break
        try:
            result = yield _activity(
                context, tally, UPLOAD_CHUNK, retry, _upload_request(tally, chunk)
            )
            tally.uploaded(UploadResult.from_json(result))
        except Exception as exc:
            tally.upload_failed(chunk.index, failure_reason(exc))


def _poll(
    context: Any, tally: RunTally, retry: RetryOptions, deadline: datetime | None = None
) -> Generator[Any, Any, None]:
    """Wait on a durable timer, longer as the run's polls add up (shared/runs/waits.py),
    then ask about every pending import."""
    yield _timer(context, tally, tally.next_import_poll(context.current_utc_datetime, deadline))
    run = tally.run
    request = PollRequest(run.run_id, run.connection, tuple(tally.awaiting()), run.scope)
    try:
        result = yield _activity(context, tally, POLL_IMPORTS, retry, request.to_json())
        tally.polled(PollResult.from_json(result))
    except Exception:
        tally.poll_failed()
    context.set_custom_status(tally.progress())


def _wait(context: Any, tally: RunTally, retry: RetryOptions) -> Steps:
    """Poll until every accepted import has finished, or the wait is over."""
    options = tally.run.options
    if tally.awaiting():
        tally.phase = Phase.WAITING
        context.set_custom_status(tally.progress())
    while tally.awaiting():
        deadline = tally.wait_until(context.current_utc_datetime)
        if tally.resets_at is not None:
            tally.stop_waiting("the daily quota ran out before the import's end could be read")
        elif tally.poll_failures >= MAX_POLL_FAILURES:
            tally.stop_waiting(f"{tally.poll_failures} status polls in a row failed")
        elif context.current_utc_datetime >= deadline:
            tally.stop_waiting(f"not finished after {options.max_wait_seconds:g} s of waiting")
        elif tally.history_full():
            return True
        else:
            yield from _poll(context, tally, retry, deadline)
    return False


def _remove(context: Any, tally: RunTally, retry: RetryOptions) -> Steps:
    """Remove the leavers (mirror mode), then poll their membership activities."""
    run = tally.run
    if tally.removals_due():
        try:
            asked = yield _activity(context, tally, APPLY_REMOVALS, retry, run.to_json())
            tally.removals_asked(RemovalResult.from_json(asked))
        except Exception as exc:
            tally.removals_failed(failure_reason(exc))
        context.set_custom_status(tally.progress())
    options = run.options
    while tally.removals_awaiting():
        now = context.current_utc_datetime
        deadline = tally.removals_until(now)
        if tally.resets_at is not None:
            tally.removals_unconfirmed("the daily quota ran out before the removals' end was read")
        elif (failures := tally.removal_poll_failures) >= MAX_POLL_FAILURES:
            tally.removals_unconfirmed(f"{failures} status polls in a row failed")
        elif now >= deadline:
            tally.removals_unconfirmed(f"not finished after {options.max_wait_seconds:g} s")
        elif tally.history_full():
            return True
        else:
            yield _timer(context, tally, tally.next_removal_poll(now, deadline))
            ids = tuple(tally.removals_awaiting())
            request = PollRequest(run.run_id, run.connection, ids, run.scope)
            try:
                result = yield _activity(context, tally, POLL_IMPORTS, retry, request.to_json())
                tally.removals_polled(PollResult.from_json(result))
            except Exception:
                tally.removal_poll_failed()
            context.set_custom_status(tally.progress())
    return False


SEGMENT_EXPORT = bp.orchestration_trigger(context_name="context")(segment_export)
"""The orchestrator as the function app registers it (what the host calls)."""
