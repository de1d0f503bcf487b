"""What a run's page shows: its status in words, its live progress with an estimate of
the time left, the report's numbers, what did not go and why, and what a mirror run
waiting for confirmation would remove.

Built from what ``GET /api/runs/{id}`` answers (the run's Durable status and, once it
has ended, its report), for people. Nothing here decides who may see a run
(shared.runs.access does), and nothing here holds an email address: the custom status
and the report hold none, and the rejects are read by ``rejects_search`` only.

The estimate of the time left: the contacts imported so far, over the time since the
run started, is the run's pace; the contacts still to import at that pace is the time
left. It counts the time the run spent preparing, so it errs long rather than short,
and it is unknown until Constant Contact has finished a first import (a run imports in
request bodies of up to 40,000 contacts, and its polls space out as it waits, so its
count moves in steps). The start is the custom status's ``started_at`` where it has
one, else the Durable instance's creation (a run that continued as new is a younger
instance, and would look faster than it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from shared.console.wording import REASONS, moment, quota_wait, when
from shared.runs.access import TERMINAL
from shared.runs.contract import Phase, status_in

PHASES: Mapping[str, str] = {
    "starting": "Waiting to start",
    "preparing": "Preparing: reading the export and checking its rows",
    "waiting_for_quota": "Waiting for the daily quota to reset before sending",
    "uploading": "Sending the contacts to Constant Contact",
    "waiting": "Waiting for Constant Contact to finish the imports",
    "finishing": "Writing the report",
    "done": "Done",
}
"""Each phase of the custom status (shared/runs/contract.py), in words."""

STATUSES: Mapping[str, tuple[str, str]] = {
    "completed": ("Completed", "every contact was delivered"),
    "completed_with_errors": (
        "Completed with errors",
        "some contacts did not go (see what did not go, below); the others did",
    ),
    "quota_exhausted": (
        "Stopped: the daily quota ran out",
        "the daily Constant Contact request quota ran out; what did not go is kept, and "
        "goes when the run is started again after the quota resets",
    ),
    "needs_confirmation": (
        "Waiting for confirmation",
        "this mirror run would remove more members than its export allows; nothing was "
        "sent or removed",
    ),
    "stopped": (
        "Stopped",
        "its export or connection was removed or changed while it ran; what went stays delivered",
    ),
    "failed": ("Failed", "nothing could be sent"),
}
"""Each status of a finished run's report, as a title and a sentence."""

TRIGGERS: Mapping[str, str] = {
    "blob": "new files in the inbox",
    "timer": "the schedule",
    "http": "a person",
    "cli": "the command line",
}
"""What started a run (the run input's ``trigger``), in words."""

FATES: Mapping[str, str] = {
    "imported": "imported",
    "import_failed": "Constant Contact's import failed",
    "upload_failed": "could not be sent",
    "not_sent": "not sent",
    "unconfirmed": "sent, but its end could not be confirmed",
    "accepted": "sent, but its end could not be confirmed",
    "pending": "not sent",
}


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    hint: str = ""


@dataclass(frozen=True)
class Verdict:
    """A run's status for people: ``key`` (a CSS class), a title and a sentence."""

    key: str
    title: str
    detail: str = ""


@dataclass(frozen=True)
class RunState:
    """A run's Durable status, as functions/http_api/runs.py's ``run_status`` reads it."""

    runtime_status: str | None
    custom_status: Mapping[str, Any]
    created_time: datetime | None = None
    output: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunState:
        custom, output = data.get("custom_status"), data.get("output")
        return cls(
            runtime_status=data.get("runtime_status"),
            custom_status=custom if isinstance(custom, Mapping) else {},
            created_time=moment(data.get("created_time")),
            output=output if isinstance(output, Mapping) else None,
        )

    @property
    def started(self) -> datetime | None:
        """When the run started: its custom status's ``started_at`` where it says it
        (every generation of a run that continued as new carries the first one's),
        else when the Durable instance was created."""
        return moment(self.custom_status.get("started_at")) or self.created_time

    @property
    def ended(self) -> bool:
        """The run has ended (and has its report, unless it broke off)."""
        return self.runtime_status in TERMINAL

    @property
    def phase(self) -> str:
        if self.runtime_status == "Pending" or not self.custom_status:
            return "done" if self.ended else "starting"
        return str(self.custom_status.get("phase") or "preparing")


def verdict(state: RunState, report: Mapping[str, Any] | None = None) -> Verdict:
    """The run's status in words: the report's status once it has ended, its phase
    while it runs."""
    if state.runtime_status is None:
        return Verdict("unknown", "Unknown", "the engine has no record of this run")
    if not state.ended:
        if state.runtime_status == "Pending":
            return Verdict("pending", PHASES["starting"])
        if state.phase == Phase.WAITING_FOR_QUOTA:
            return Verdict("running", PHASES[state.phase], quota_wait(state.custom_status))
        return Verdict("running", PHASES.get(state.phase, state.phase))
    status = _status_of(state, report)
    if status in STATUSES:
        title, detail = STATUSES[status]
        return Verdict(status, title, detail)
    return Verdict(
        "failed",
        "Broke off",
        f"the run itself ended {state.runtime_status} before it could write its report",
    )


def _status_of(state: RunState, report: Mapping[str, Any] | None) -> str:
    return status_in(report, state.output, state.custom_status) or ""


def about(run_id: str, state: RunState, report: Mapping[str, Any] | None) -> tuple[Fact, ...]:
    """The run's facts above its progress or report: its id, source, what started it,
    when it started and ended."""
    found = report or {}
    facts = [Fact("Run id", run_id)]
    if found.get("source"):
        facts.append(Fact("Source", str(found["source"])))
    if found.get("trigger"):
        trigger = str(found["trigger"])
        facts.append(Fact("Started by", TRIGGERS.get(trigger, trigger)))
    started = found.get("started_at") or found.get("requested_at") or state.started
    if when(started):
        facts.append(Fact("Started", when(started)))
    if when(found.get("finished_at")):
        facts.append(Fact("Finished", when(found.get("finished_at"))))
    return tuple(facts)


# --- live progress ------------------------------------------------------------------------


def time_left(imported: int, to_import: int, elapsed: float) -> float | None:
    """Seconds left at the pace so far (see the module docstring); None when it cannot
    be told yet: nothing imported, or no time gone."""
    if imported <= 0 or elapsed <= 0 or to_import <= 0:
        return None
    return elapsed * max(to_import - imported, 0) / imported


def duration_words(seconds: float) -> str:
    """``less than a minute``, ``about 3 minutes``, ``about 2 hours 10 minutes``."""
    minutes = round(seconds / 60)
    if seconds < 60 or minutes < 1:
        return "less than a minute"
    if minutes < 90:
        return f"about {_plural(minutes, 'minute')}"
    hours, rest = divmod(minutes, 60)
    return f"about {_plural(hours, 'hour')}" + (f" {_plural(rest, 'minute')}" if rest else "")


def _plural(count: int, noun: str, nouns: str = "") -> str:
    return f"{count:,} " + (noun if count == 1 else nouns or f"{noun}s")


@dataclass(frozen=True)
class Progress:
    """What a running run's page shows, and its progress answer holds: counts and
    words, never a contact."""

    phase: str
    prepared: int
    """Contacts to send (unchanged ones are not): the custom status's contacts_total."""
    imports_total: int
    imports_sent: int
    contacts_sent: int
    """Contacts in imports Constant Contact accepted."""
    imports_failed: int
    imported: int
    """Contacts in imports Constant Contact finished."""
    time_left: str

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.imported / self.prepared)) if self.prepared else 0

    @property
    def phase_text(self) -> str:
        return PHASES.get(self.phase, self.phase)


def progress_of(state: RunState, now: datetime) -> Progress:
    """The run's progress now (``now`` is timezone-aware)."""
    custom = state.custom_status
    phase = state.phase
    prepared = _count(custom, "contacts_total")
    imported = min(_count(custom, "contacts_done"), prepared)
    if state.ended or phase == "done":
        left = "none: the run has ended"
    elif phase in ("starting", "preparing"):
        left = "not known yet: the run is still preparing"
    elif phase == "finishing":
        left = "less than a minute"
    elif phase == "waiting_for_quota":
        resumes = when((custom or {}).get("resumes_at"))
        left = f"not known yet: nothing is sent before {resumes or 'the quota resets'}"
    elif prepared == 0:
        left = "none: nothing to send"
    else:
        elapsed = (now - state.started).total_seconds() if state.started else 0.0
        seconds = time_left(imported, prepared, elapsed)
        left = (
            "not known yet: it is estimated once Constant Contact has finished a first import"
            if seconds is None
            else duration_words(seconds)
        )
    return Progress(
        phase=phase,
        prepared=prepared,
        imports_total=_count(custom, "chunks_total"),
        imports_sent=_count(custom, "chunks_uploaded"),
        contacts_sent=min(_count(custom, "contacts_sent"), prepared),
        imports_failed=_count(custom, "chunks_failed"),
        imported=imported,
        time_left=left,
    )


def _count(data: Mapping[str, Any] | None, name: str) -> int:
    value = (data or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


NOT_YET = "not yet: the run is preparing"


def progress_json(state: RunState, now: datetime) -> dict[str, Any]:
    """The small answer the run page's script polls: whether the run has ended, its
    status and phase in words, and the counts as the page shows them."""
    shown = progress_of(state, now)
    status = verdict(state)
    bodies = _plural(shown.imports_total, "request body", "request bodies")
    counted = shown.phase not in ("starting", "preparing")  # prepare counts them at its end
    return {
        "ended": state.ended,
        "status": status.key,
        "title": status.title,
        "percent": shown.percent,
        "fields": {
            "phase": shown.phase_text,
            "prepared": f"{shown.prepared:,}" if counted else NOT_YET,
            "sent": (
                f"{shown.contacts_sent:,} of {shown.prepared:,} "
                f"({shown.imports_sent:,} of {bodies})"
                if counted
                else NOT_YET
            ),
            "imported": f"{shown.imported:,} of {shown.prepared:,}" if counted else NOT_YET,
            "left": shown.time_left,
        },
    }


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    code: str
    count: int

    @property
    def words(self) -> str:
        return REASONS.get(self.code, "")


@dataclass(frozen=True)
class ReportView:
    """The report as the run's page shows it."""

    facts: tuple[Fact, ...]
    reasons: tuple[Reason, ...]
    """Rejected rows by reason (duplicates last), largest first."""
    not_gone: tuple[str, ...]
    """What did not go and why, one sentence each; empty when everything went."""
    rows_left_out: int
    """Rejected rows and duplicates: the rows in the rejects file."""
    has_rejects_file: bool


def report_view(report: Mapping[str, Any]) -> ReportView:
    counts = _mapping(report.get("counts"))
    chunks = _mapping(report.get("chunks"))
    requests = _mapping(report.get("requests"))
    changes = _mapping(report.get("changes"))
    rejects = _mapping(report.get("rejects"))
    delivered_hint = (
        f"in {_count(chunks, 'imported'):,} of {_count(chunks, 'total'):,} imports; "
        f"Constant Contact counted {_count(counts, 'person_count'):,}"
    )
    mirror = changes.get("mode") == "mirror"
    facts = [
        Fact("Rows read", f"{_count(counts, 'rows_read'):,}"),
        Fact("Delivered", f"{_count(counts, 'contacts_delivered'):,}", delivered_hint),
        Fact(
            "Duplicates",
            f"{_count(counts, 'duplicates'):,}",
            "rows with the address of an earlier row",
        ),
        Fact("Rejected", f"{_count(counts, 'rejected'):,}", "by reason below"),
        Fact(
            "Unchanged",
            f"{_count(counts, 'contacts_unchanged'):,}",
            "the same as the last run sent: not sent again",
        ),
        Fact(
            "Removed",
            f"{_count(changes, 'removed'):,}",
            "members who left the segment, taken off the lists"
            if mirror
            else "add mode never removes anyone",
        ),
    ]
    for name, label in (
        ("contacts_not_delivered", "Not delivered"),
        ("contacts_unconfirmed", "Unconfirmed"),
        ("cannot_add_to_list", "Not added to the lists"),
    ):
        if _count(counts, name):
            facts.append(Fact(label, f"{_count(counts, name):,}"))
    retried = _mapping(changes.get("retried"))
    if _count(retried, "contacts"):
        facts.append(
            Fact(
                "Sent again",
                f"{_count(retried, 'contacts'):,}",
                f"not delivered by run {retried.get('from_run')}",
            )
        )
    removals = _mapping(report.get("removals"))
    facts.append(Fact("Requests used", _requests_text(requests, chunks, removals)))
    planned = _planned_text(requests, _mapping(report.get("quota_plan")))
    if planned:
        facts.append(Fact("Requests planned", planned))
    reasons = sorted(
        (Reason(str(code), n) for code, n in _mapping(rejects.get("reasons")).items() if n),
        key=lambda r: (-r.count, r.code),
    )
    if _count(counts, "duplicates"):
        reasons.append(Reason("duplicate", _count(counts, "duplicates")))
    return ReportView(
        facts=tuple(facts),
        reasons=tuple(reasons),
        not_gone=tuple(not_gone(report)),
        rows_left_out=_count(counts, "rejected") + _count(counts, "duplicates"),
        has_rejects_file=bool(rejects.get("file")),
    )


def _requests_text(
    requests: Mapping[str, Any], chunks: Mapping[str, Any], removals: Mapping[str, Any]
) -> str:
    text = (
        f"{_plural(_count(requests, 'import_requests'), 'import request')} for "
        f"{_plural(_count(chunks, 'total'), 'request body', 'request bodies')} (fewest possible "
        f"{_count(chunks, 'fewest_possible'):,}); "
        f"{_plural(_count(requests, 'status_polls'), 'status poll')} in "
        f"{_plural(_count(requests, 'poll_requests'), 'request')}"
    )
    if _count(removals, "activities"):
        text += f"; {_plural(_count(removals, 'activities'), 'membership removal request')}"
    return text


def _planned_text(requests: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    """The estimate the run weighed against the key's day, against what it made, and
    how long it waited for the quota."""
    if not isinstance(requests.get("estimated"), int):
        return ""
    text = (
        f"{_count(requests, 'total'):,} made of {_count(requests, 'estimated'):,} estimated "
        "before sending"
    )
    if _count(plan, "waits"):
        text += (
            f"; waited for {_plural(_count(plan, 'waits'), 'daily quota reset')} "
            f"from {when(plan.get('waited_since'))}"
        )
    elif plan.get("error"):
        text += f"; sent without the check: {plan['error']}"
    return text


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def not_gone(report: Mapping[str, Any]) -> list[str]:
    """What did not go, and why, one sentence each (the report's own words where it
    has them)."""
    said: list[str] = []
    counts = _mapping(report.get("counts"))
    if report.get("error"):
        said.append(f"The run stopped: {report['error']}")
    waits = report.get("status") == "needs_confirmation"  # no body went: said below
    for entry in () if waits else report.get("chunk_outcomes") or ():
        if not isinstance(entry, Mapping):
            continue
        fate, shortfall = str(entry.get("fate", "")), _count(entry, "shortfall")
        if fate == "imported" and not shortfall:
            continue
        why = entry.get("error") or (
            f"Constant Contact counted {shortfall:,} fewer contacts than were sent"
            if shortfall
            else ""
        )
        said.append(
            f"Request body {PurePosixPath(str(entry.get('name', ''))).name} "
            f"({_count(entry, 'contacts'):,} contacts): {FATES.get(fate, fate)}"
            + (f": {why}" if why else "")
        )
    held = _mapping(report.get("not_delivered"))
    if _count(held, "contacts") and held.get("kept_in"):
        said.append(
            f"{_count(held, 'contacts'):,} contacts did not go; their request bodies are kept "
            f"in {held['kept_in']}. To send them again: {held.get('how_to_resend') or ''}"
        )
    quota = _mapping(report.get("quota"))
    if quota:
        said.append(
            f"The daily request quota ran out; it resets at {when(quota.get('resets_at'))}. "
            f"Then: {quota.get('resume') or 'start the run again'}"
        )
    if _count(counts, "cannot_add_to_list"):
        said.append(
            f"{_count(counts, 'cannot_add_to_list'):,} people were not added to the lists: "
            "they had unsubscribed earlier"
        )
    removals = _mapping(report.get("removals"))
    if removals.get("error"):
        said.append(f"Removals: {removals['error']}")
    if removals.get("needs_confirmation"):
        said.append(
            "Nothing was sent or removed: the run waits for its removals to be confirmed "
            "(see above)"
        )
    left_out = _count(counts, "rejected") + _count(counts, "duplicates")
    if left_out:
        said.append(
            f"{_plural(left_out, 'row')} left out ({_count(counts, 'rejected'):,} rejected, "
            f"{_count(counts, 'duplicates'):,} duplicates): they are in the rejects file"
        )
    return said


# --- removals waiting for confirmation ---------------------------------------------------------


@dataclass(frozen=True)
class ListRemoval:
    list_id: str
    name: str
    """The list's name in the account, or its id when the account could not be asked."""
    members: int
    remove: int
    kept_for_others: int

    @property
    def share(self) -> str:
        return f"{self.remove / self.members:.1%}" if self.members else "—"


@dataclass(frozen=True)
class Confirmation:
    """What a mirror run at ``needs_confirmation`` would remove, and why it asks."""

    why: str
    lists: tuple[ListRemoval, ...]
    planned: int


def confirmation_of(
    report: Mapping[str, Any] | None, names: Mapping[str, str] | None = None
) -> Confirmation | None:
    """The removals the run waits to have confirmed; None unless it waits."""
    if not report or report.get("status") != "needs_confirmation":
        return None
    removals = _mapping(report.get("removals"))
    lists = []
    for entry in removals.get("lists") or ():
        if isinstance(entry, Mapping):
            list_id = str(entry.get("list_id", ""))
            lists.append(
                ListRemoval(
                    list_id=list_id,
                    name=(names or {}).get(list_id, list_id),
                    members=_count(entry, "members"),
                    remove=_count(entry, "remove"),
                    kept_for_others=_count(entry, "kept_for_others"),
                )
            )
    return Confirmation(
        why=str(removals.get("needs_confirmation") or ""),
        lists=tuple(lists),
        planned=_count(removals, "planned"),
    )
