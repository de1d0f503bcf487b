"""The run report: what happened to every row of an export run, in one JSON document.

``finish_run`` writes it (report.json in the run store); ``ccexport run`` prints it;
the HTTP API serves it as it is. Its counts reconcile:

    rows_read = contacts + duplicates + rejected
    contacts  = contacts_delivered + contacts_not_delivered + contacts_unconfirmed
                + contacts_unchanged

Fields:

- ``run_id``, ``status`` (completed | completed_with_errors | quota_exhausted | failed),
  ``export``, ``list_ids``, ``connection``, ``trigger``, ``source``, ``requested_at``,
  ``started_at``, ``finished_at``, ``error`` (why the run failed, if it did).
- ``counts``: the row accounting above, plus ``contacts_sent`` (in imports Constant
  Contact accepted), ``person_count`` (what its completed imports counted),
  ``cannot_add_to_list`` (unsubscribed people it did not add to the lists),
  ``error_count`` and ``correctable_count`` (its own per-contact errors).
- ``chunks``: how many request bodies ended how, against ``fewest_possible``.
- ``chunk_outcomes``: one entry per body: its fate (imported, import_failed,
  upload_failed, not_sent, unconfirmed), the import's activity id and Constant
  Contact's counts and ``activity_errors``, ``shortfall`` (contacts sent that the
  completed import does not count), and ``kept_at`` where an undelivered body stays.
- ``not_delivered``: the contacts that did not go, which bodies hold them, where.
- ``mismatches``: completed imports whose ``person_count`` differs from what was sent.
- ``rejects``: rows left out (invalid, duplicates) by reason, and where rejects.csv is.
- ``quota``: set when the daily quota ran out: when it resets and how to resume.
- ``requests``: import requests sent (against the chunks: the fewest possible is one
  each), status polls and the requests they took, in mirror mode the lists' reads,
  the removals and their polls; ``total``, every request the run counted; and
  ``estimated``, what the run estimated before it sent (shared/runs/estimate.py; null
  when it had nothing to send), with ``estimate``, the same by kind: ``total`` against
  ``estimated`` is how far off the estimate was. ``total`` counts what the activities
  answered with; an attempt that failed for good and was tried again by Durable made
  requests that only the API key's record counted (``ccexport usage``).
- ``quota_plan`` (null when nothing was to be sent): what the run found of the API
  key's day before it sent (``key_day``: day, used, limit, left, resets_at), how many
  resets it ``waits``-ed for, since when (``waited_since``), and ``error`` when the
  day could not be read (the run then sent unchecked).
- ``changes``: the segment against the export's last snapshot: ``mode`` (add or
  mirror), ``incremental`` (compared with a snapshot), ``added`` (new contacts),
  ``updated`` (changed ones), ``unchanged`` (not sent again), ``left`` (in the last
  snapshot, not in this segment), ``removed`` (members taken off the lists),
  ``content_unchanged`` (the same files as last time: nothing was read),
  ``retried`` (``{"contacts": N, "from_run": run id}``, present only after a run that
  left contacts to send again: how many this run sent again because that run, the
  last, did not deliver them; counted by prepare as those of the last run's retry set
  that this run found new or changed), and ``state``:
  whether the export's state was written, and where (after a partly delivered run:
  ``retry``, how many contacts the next run will send again).
- ``removals`` (mirror mode, when the lists were looked at): per list its members,
  the removals planned and those kept because another export still sends them; what
  was asked and how the membership activities ended; ``needs_confirmation``: why the
  run stopped before sending (too large a share of a list, or an empty segment).

No email address appears here (Constant Contact's error lines are scrubbed); they are
only in rejects.csv and in the staged bodies kept for a new run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from shared.runs.contract import FinishRequest, RunStatus
from shared.runs.prepared import Changes
from shared.runs.quota_plan import QuotaPlan
from shared.runs.uploads import ChunkFate, ChunkOutcome


def _chunk_entry(outcome: ChunkOutcome, staging: str) -> dict[str, Any]:
    chunk, state = outcome.chunk, outcome.import_state
    entry: dict[str, Any] = {
        "index": chunk.index,
        "name": chunk.name,
        "contacts": chunk.contacts,
        "bytes": chunk.bytes,
        "fate": outcome.fate.value,
        "activity_id": outcome.activity_id,
        "already_accepted": outcome.already_accepted,
        "upload_requests": outcome.upload_requests,
        "state": state.state if state else None,
        "person_count": state.person_count if state else None,
        "error_count": state.error_count if state else None,
        "correctable_count": state.correctable_count if state else None,
        "cannot_add_to_list_count": state.cannot_add_to_list_count if state else None,
        "activity_errors": list(state.activity_errors) if state else [],
        "shortfall": outcome.shortfall,
        "error": outcome.error,
        "kept_at": None,
    }
    if outcome.fate.lost or outcome.fate is ChunkFate.UNCONFIRMED:
        entry["kept_at"] = f"{staging}/{chunk.name}"
    return entry


def build_report(
    request: FinishRequest,
    *,
    staging: str,
    rejects_file: str | None,
    resume_hint: str,
    state: dict[str, Any] | None = None,
    retried: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report for a finished run (pure: the caller stores it)."""
    run, prepared, outcomes, plan = request.run, request.prepared, request.outcomes, request.plan
    export = run.export
    fates = Counter(o.fate for o in outcomes)
    imported = [o for o in outcomes if o.fate is ChunkFate.IMPORTED]
    lost = [o for o in outcomes if o.fate.lost]
    unconfirmed = [o for o in outcomes if o.fate in (ChunkFate.UNCONFIRMED, ChunkFate.ACCEPTED)]
    shortfall = sum(o.shortfall for o in imported)
    states = [o.import_state for o in imported if o.import_state is not None]
    contacts = prepared.contacts if prepared else 0
    not_delivered = sum(o.chunk.contacts for o in lost) + shortfall
    held_back = [o for o in outcomes if o in lost or o in unconfirmed]  # in chunk order
    report: dict[str, Any] = {
        "run_id": run.run_id,
        "status": request.status.value,
        "export": export.get("name"),
        "list_ids": list(export.get("list_ids", [])),
        "connection": run.connection,
        "trigger": run.trigger,
        "source": prepared.source if prepared and prepared.source else run.source,
        "requested_at": run.requested_at,
        "started_at": request.started_at,
        "finished_at": request.finished_at,
        "error": request.error,
        "counts": {
            "rows_read": prepared.rows_read if prepared else 0,
            "contacts": contacts,
            "duplicates": prepared.duplicates if prepared else 0,
            "rejected": prepared.rejected if prepared else 0,
            "contacts_sent": sum(o.chunk.contacts for o in outcomes if o.activity_id),
            "contacts_delivered": sum(o.chunk.contacts for o in imported) - shortfall,
            "contacts_not_delivered": not_delivered,
            "contacts_unconfirmed": sum(o.chunk.contacts for o in unconfirmed),
            "contacts_unchanged": contacts - sum(o.chunk.contacts for o in outcomes),
            "person_count": sum(s.person_count for s in states),
            "cannot_add_to_list": sum(s.cannot_add_to_list_count for s in states),
            "error_count": sum(s.error_count for s in states),
            "correctable_count": sum(s.correctable_count for s in states),
        },
        "chunks": {
            "total": len(outcomes),
            "fewest_possible": prepared.fewest_chunks_possible if prepared else 0,
            **{
                fate.value: fates.get(fate, 0)
                for fate in ChunkFate
                if fate is not ChunkFate.PENDING
            },
        },
        "chunk_outcomes": [_chunk_entry(o, staging) for o in outcomes],
        "not_delivered": {
            "contacts": not_delivered + sum(o.chunk.contacts for o in unconfirmed),
            "chunks": [o.chunk.name for o in held_back],
            "kept_in": staging if held_back else None,
            "how_to_resend": resume_hint if held_back else None,
        },
        "mismatches": [
            {
                "chunk": o.chunk.name,
                "sent": o.chunk.contacts,
                "person_count": o.import_state.person_count,
                "error_count": o.import_state.error_count,
                "correctable_count": o.import_state.correctable_count,
            }
            for o in imported
            if o.import_state is not None and o.import_state.person_count != o.chunk.contacts
        ],
        "rejects": {
            "rejected": prepared.rejected if prepared else 0,
            "duplicates": prepared.duplicates if prepared else 0,
            "reasons": dict(prepared.reject_reasons) if prepared else {},
            "file": rejects_file,
        },
        "quota": None,
        "requests": {
            **asdict(request.requests),
            "fewest_import_requests": len(outcomes),
            "total": request.requests.total,
            "estimated": None if plan is None else plan.estimate.total,
            "estimate": None if plan is None else plan.estimate.to_json(),
        },
        "quota_plan": None if plan is None else _quota_plan(plan),
    }
    report["changes"] = _changes(request, state, retried)
    report["removals"] = _removals(request)
    if request.status is RunStatus.QUOTA_EXHAUSTED:
        report["quota"] = {
            "exhausted": True,
            "resets_at": request.resets_at,
            "resume": f"after {request.resets_at}: {resume_hint}",
        }
    return report


def _quota_plan(plan: QuotaPlan) -> dict[str, Any]:
    day = plan.key_day
    return {
        "key_day": None
        if day is None
        else {k: v for k, v in asdict(day).items() if k != "resets_in"},
        "waits": plan.waits,
        "waited_since": plan.waited_since,
        "error": plan.error,
    }


def _changes(
    request: FinishRequest, state: dict[str, Any] | None, retried: Mapping[str, Any] | None
) -> dict[str, Any]:
    prepared, removals = request.prepared, request.removals
    changes = prepared.changes if prepared else Changes()
    found: dict[str, Any] = {
        "mode": changes.mode,
        "incremental": changes.incremental,
        "added": changes.added,
        "updated": changes.updated,
        "unchanged": changes.unchanged,
        "left": changes.left,
        "removed": removals.asked if removals is not None and removals.done else 0,
        "content_unchanged": changes.content_unchanged,
    }
    if retried:  # only after a run that left contacts to send again
        found["retried"] = dict(retried)
    found["state"] = state
    return found


def _removals(request: FinishRequest) -> dict[str, Any] | None:
    members, removals = request.members, request.removals
    if members is None and request.confirmation is None:
        return None
    return {
        "lists": [
            {**asdict(plan), "share": round(plan.share(), 4)}
            for plan in (members.lists if members else ())
        ],
        "found_by": members.via if members else None,
        "planned": members.removals if members else 0,
        "asked": removals.asked if removals else 0,
        "activities": removals.activities if removals else 0,
        "activities_completed": removals.activities_completed if removals else 0,
        "error": removals.error if removals else (members.error if members else None),
        "needs_confirmation": request.confirmation,
    }


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def counts_text(counts: Mapping[str, int]) -> str:
    """Counts by name as a person reads them: "2 invalid_email, 1 ragged_row"."""
    return ", ".join(f"{count:,} {name}" for name, count in counts.items())


def render(report: dict[str, Any]) -> str:
    """The report as a few lines for a terminal."""
    counts, chunks = report["counts"], report["chunks"]
    reasons = counts_text(report["rejects"]["reasons"])
    lines = [
        f"run {report['run_id']}: {report['status'].replace('_', ' ')}",
        f"  source          {report['source']}",
        f"  rows read       {counts['rows_read']:>10,}",
        f"  contacts        {counts['contacts']:>10,}  "
        f"(duplicates {counts['duplicates']:,}; rejected {counts['rejected']:,}"
        + (f": {reasons}" if reasons else "")
        + ")",
        f"  delivered       {counts['contacts_delivered']:>10,}  "
        f"in {chunks['imported']} of {chunks['total']} imports "
        f"(Constant Contact counted {counts['person_count']:,})",
    ]
    lines += render_changes(report.get("changes"), report.get("removals"))
    if counts["contacts_not_delivered"] or counts["contacts_unconfirmed"]:
        lines.append(f"  NOT delivered   {counts['contacts_not_delivered']:>10,}")
        if counts["contacts_unconfirmed"]:
            lines.append(f"  unconfirmed     {counts['contacts_unconfirmed']:>10,}")
    if counts["cannot_add_to_list"]:
        lines.append(
            f"  not listed      {counts['cannot_add_to_list']:>10,}  (unsubscribed earlier)"
        )
    lines += _request_lines(report)
    for entry in report["chunk_outcomes"]:
        if entry["fate"] != ChunkFate.IMPORTED.value or entry["shortfall"]:
            why = entry["error"] or f"{entry['shortfall']:,} contacts not counted"
            lines.append(
                f"  ! {entry['name']}: {entry['fate'].replace('_', ' ')}, "
                f"{entry['contacts']:,} contacts ({why})"
            )
    for mismatch in report["mismatches"]:
        lines.append(
            f"  ! {mismatch['chunk']}: sent {mismatch['sent']:,}, Constant Contact counted "
            f"{mismatch['person_count']:,} (errors {mismatch['error_count']}, "
            f"correctable {mismatch['correctable_count']})"
        )
    held = report["not_delivered"]
    if held["kept_in"]:
        lines.append(f"  kept for resend {held['kept_in']}")
        lines.append(f"  to resend       {held['how_to_resend']}")
    confirmation = (report.get("removals") or {}).get("needs_confirmation")
    if confirmation:
        lines.append(f"  NEEDS CONFIRMATION  {confirmation}")
    if report["quota"]:
        lines.append(f"  quota           exhausted; resets at {report['quota']['resets_at']}")
    if report["error"]:
        lines.append(f"  error           {report['error']}")
    if report["rejects"]["file"]:
        lines.append(f"  rejects         {report['rejects']['file']}")
    return "\n".join(lines)


def _request_lines(report: dict[str, Any]) -> list[str]:
    """What the run asked of Constant Contact, against its estimate and any wait."""
    chunks, requests = report["chunks"], report["requests"]
    lines = [
        f"  requests        {_plural(requests['import_requests'], 'import')} for "
        f"{_plural(chunks['total'], 'chunk')} (fewest possible {chunks['fewest_possible']}); "
        f"{_plural(requests['status_polls'], 'status poll')} in "
        f"{_plural(requests['poll_requests'], 'request')}"
    ]
    if requests.get("estimated") is not None:
        lines.append(
            f"  requests made   {requests['total']:>10,}  "
            f"(estimated {requests['estimated']:,} before sending)"
        )
    waited = (report.get("quota_plan") or {}).get("waits", 0)
    if waited:
        lines.append(
            f"  waited          for {_plural(waited, 'daily quota reset')} before sending "
            f"(since {report['quota_plan']['waited_since']})"
        )
    return lines


def render_changes(changes: Mapping[str, Any] | None, removals: dict[str, Any] | None) -> list[str]:
    """The lines about what changed since the last run (``ccexport run`` and ``prepare``)."""
    if not changes:
        return []
    if changes.get("content_unchanged"):
        return [
            f"  unchanged       {changes['unchanged']:>10,}  "
            "(the same segment as last time: nothing to send)"
        ]
    since = "since the last run" if changes.get("incremental") else "(no earlier run to compare)"
    lines = [
        f"  added           {changes['added']:>10,}  {since}",
        f"  updated         {changes['updated']:>10,}",
        f"  unchanged       {changes['unchanged']:>10,}  (not sent again)",
    ]
    retried = changes.get("retried")
    if retried:
        lines.append(
            f"  retried         {retried['contacts']:>10,}  "
            f"(not delivered by run {retried['from_run']})"
        )
    if changes.get("left"):
        lines.append(f"  left segment    {changes['left']:>10,}")
    if changes.get("mode") == "mirror":
        removed = changes.get("removed", 0)
        planned = (removals or {}).get("planned", changes.get("removal_candidates", 0))
        lines.append(f"  removed         {removed:>10,}  (mirror mode; planned {planned:,})")
        for entry in (removals or {}).get("lists", []):
            lines.append(
                f"    list {entry['list_id']}: {entry['members']:,} members, "
                f"{entry['remove']:,} to remove ({entry['share']:.1%})"
                + (
                    f", {entry['kept_for_others']:,} kept for other exports"
                    if entry.get("kept_for_others")
                    else ""
                )
            )
    return lines
