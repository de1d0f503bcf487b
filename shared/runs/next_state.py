"""The export's state around one run: what prepare compares with, what finish keeps.

``Baseline`` is read when the run is prepared: the export's state key (from the
definition and the located segment), its last state, and whether that state can be
compared with at all (same lists, mapping and encoding; not a ``full`` run).

- Unchanged: when the segment's bytes hash to the last snapshot's ``content_hash``
  under the same definition, and no removal is pending, nothing is parsed: the run
  stages an empty prepare (0 chunks) that repeats the last counts. A file that is the
  same but re-written (new folder, new time) counts as unchanged; a changed mapping or
  list does not (the definition hash is part of the check).
- Otherwise prepare compares contact by contact (shared/exports/changes.py) and stages the
  segment's snapshot beside the chunks.

``finish_state`` writes the next state when the run ends:

- completed: the staged snapshot becomes the export's, and the managed sets follow
  the mirror plan (shared/runs/mirror.py);
- completed with errors, stopped by the quota or stopped, after something was sent,
  in add mode: the old snapshot updated with exactly the contacts of the chunks
  Constant Contact imported and counted in full (``delivered_snapshot``). The contacts
  of every other chunk (failed, unconfirmed, not sent, and one counted short: its
  ``person_count`` says how many are missing, not which, so the whole chunk counts as
  not delivered) keep their old entry, or stay out, so the next run sends them again;
  their keys are the state's retry set, and its header names the run
  (``retry_from``), for the next run's report. Their keys are read from the chunk
  bodies still in staging (finish_run deletes a short chunk's body only after this);
- the same in mirror mode (the lists were looked at): the old snapshot stays whole
  (so the next run sends all the changes again: which contacts a partial mirror run
  leaves pending removals for is the mirror plan's business, and it reads the old
  snapshot) but the managed sets are updated, because the people this run added
  are on the lists now and must stay known as the export's;
- anything else (failed, needs confirmation, nothing sent): the state is left as it was.

If another run of the same export wrote the state since this run read it (a different
generation), nothing is written: the next run compares with what that run left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from shared.exports.changes import SNAPSHOT_FILE, ChangeTracker, content_hash, segment_names
from shared.exports.definitions import ExportDefinition
from shared.exports.state import (
    EMPTY,
    ExportState,
    Keys,
    StateError,
    StateStore,
    definition_hash,
    delivered_snapshot,
    difference,
    email_keys,
    load,
    state_key,
    union,
)
from shared.prepare.outputs import PreparedOutput
from shared.prepare.summary import PrepareSummary
from shared.runs.contract import FinishRequest, RunStatus
from shared.runs.mirror import PLAN_FILE, next_managed, read_plan
from shared.runs.prepared import Changes
from shared.runs.store import RunStore
from shared.runs.uploads import ChunkFate, ChunkOutcome
from shared.segments.layout import Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Baseline:
    key: str
    definition_hash: str
    mode: str
    previous: ExportState | None
    comparable: bool
    """The last snapshot was made under the same lists, mapping and encoding."""
    full: bool
    max_profiles: int
    """The export's, which caps what one part may hold (prepare's cap, when hashing too)."""
    list_ids: tuple[str, ...] = ()

    @property
    def generation(self) -> str:
        return self.previous.generation if self.previous is not None else ""

    def tracker(self) -> ChangeTracker:
        return ChangeTracker(self.previous, full=self.full or not self.comparable)

    def removal_candidates(self, segment_keys: Keys) -> int:
        """Managed members (over the export's lists) that are not in the segment."""
        if self.previous is None:
            return 0
        return sum(
            int(difference(self.previous.managed_in(list_id), segment_keys).size)
            for list_id in self.list_ids
        )


def baseline(
    states: StateStore, export: ExportDefinition, segment: Segment, *, full: bool = False
) -> Baseline:
    """The export's key and last state (an unreadable state counts as none: the run
    sends everything, and the state it then writes replaces the broken one)."""
    key = run_state_key(export, segment)
    try:
        previous = load(states, key)
    except StateError as exc:
        log.warning("export state %s cannot be read (%s); this run sends everything", key, exc)
        previous = None
    hashed = definition_hash(export)
    comparable = previous is not None and previous.header.get("definition_hash") == hashed
    return Baseline(
        key=key,
        definition_hash=hashed,
        mode=export.mode,
        previous=previous,
        comparable=comparable,
        full=full,
        max_profiles=export.max_profiles,
        list_ids=export.list_ids,
    )


def run_state_key(export: ExportDefinition, segment: Segment) -> str:
    export_name, table = segment_names(segment)
    return state_key(export.name, export.list_ids, export_name, table)


def changes_json(base: Baseline, counts: dict[str, Any], segment_keys: Keys) -> dict[str, Any]:
    """The summary's ``changes``: the tracker's counts and what the run needs to know."""
    candidates = base.removal_candidates(segment_keys)
    return {
        **counts,
        "state_key": base.key,
        "mode": base.mode,
        "generation": base.generation,
        "removal_candidates": candidates,
        "needs_members": base.mode == "mirror" and (counts.get("added", 0) > 0 or candidates > 0),
    }


def skip_unchanged(
    base: Baseline, segment: Segment, output: PreparedOutput
) -> PrepareSummary | None:
    """Stage an empty prepare when the segment is the last snapshot's; else None."""
    previous = base.previous
    if previous is None or base.full or not base.comparable:
        return None
    if not previous.header.get("content_hash") or previous.pending_removals():
        return None
    if content_hash(segment, max_profiles=base.max_profiles) != previous.header["content_hash"]:
        return None
    last = previous.header.get("counts", {})
    summary = PrepareSummary(
        source=segment.describe(),
        list_ids=tuple(previous.header.get("list_ids", [])),
        rows_read=last.get("rows_read", 0),
        contacts=last.get("contacts", 0),
        duplicates=last.get("duplicates", 0),
        rejected=last.get("rejected", 0),
        reject_reasons=dict(last.get("reject_reasons", {})),
        content_hash=previous.header["content_hash"],
        changes={
            "incremental": True,
            "added": 0,
            "updated": 0,
            "unchanged": previous.contacts,
            "left": 0,
            "previous_contacts": previous.contacts,
            "sent": 0,
            "content_unchanged": True,
            "state_key": base.key,
            "mode": base.mode,
            "generation": base.generation,
            "removal_candidates": 0,
            "needs_members": False,
        },
    )
    output.commit(summary.to_json())
    return summary


class _NotWritten(Exception):
    """Why a finished run leaves the export's state as it was."""


def finish_state(
    runs: RunStore, states: StateStore, request: FinishRequest
) -> dict[str, Any] | None:
    """Write the export's next state if the run earned it; returns what was done."""
    prepared = request.prepared
    if prepared is None or prepared.error is not None or not prepared.changes.state_key:
        return None
    key = prepared.changes.state_key
    try:
        return _write_state(runs, states, request, prepared.changes)
    except _NotWritten as exc:
        return {"key": key, "written": False, "why": str(exc)}


def _write_state(
    runs: RunStore, states: StateStore, request: FinishRequest, changes: Changes
) -> dict[str, Any]:
    key, run_id = changes.state_key, request.run.run_id
    completed = request.status is RunStatus.COMPLETED
    partial = request.status in (
        RunStatus.COMPLETED_WITH_ERRORS,
        RunStatus.QUOTA_EXHAUSTED,
        RunStatus.STOPPED,
    )
    if changes.content_unchanged and completed:
        raise _NotWritten("unchanged")
    if not completed and not (partial and any(o.activity_id for o in request.outcomes)):
        raise _NotWritten(f"the run ended {request.status.value}")
    try:
        current = load(states, key)
    except StateError:
        current = None
    found = current.generation if current is not None else ""
    ours = current is not None and current.header.get("run_id") == run_id  # an earlier attempt
    if found != changes.generation and not ours:
        log.warning("export state %s: another run wrote it since this one began; kept", key)
        raise _NotWritten("another run of this export wrote it meanwhile")
    base = current if current is not None else ExportState.new(key)
    plan_bytes = runs.read_staged(run_id, PLAN_FILE)
    plan = read_plan(plan_bytes) if plan_bytes is not None else None
    export = request.run.definition()
    if not completed and export.mode == "add":
        return _write_partial(runs, states, request, key, base, ours=ours)
    if not completed and plan is None:
        raise _NotWritten(f"the run ended {request.status.value}")
    removed = request.removals is not None and request.removals.done
    managed = next_managed(base.managed, export.list_ids, plan, removed=removed)
    header = _written_by(key, request, export)
    if completed:
        staged = _staged_snapshot(runs, run_id)
        summary = PrepareSummary.from_json(runs.staged_summary(run_id) or {})
        candidate = ExportState.from_bytes(staged)
        keys, digests = candidate.keys, candidate.digests
        header["definition_hash"] = definition_hash(export)
        header["content_hash"] = summary.content_hash
        header["counts"] = summary.counts()
    else:
        keys, digests = base.keys, base.digests
        header["definition_hash"] = base.header.get("definition_hash", "")
        header["content_hash"] = ""  # the next run must read the segment
        header["counts"] = base.header.get("counts", {})
    state = ExportState(base.header, keys, digests, managed).successor(**header)
    states.write(key, state.to_bytes())
    return {
        "key": key,
        "written": True,
        "snapshot": "updated" if completed else "kept (the changes are sent again next run)",
        "contacts": state.contacts,
        "managed": {list_id: int(m.size) for list_id, m in managed.items()},
        "where": states.describe(key),
    }


def not_fully_delivered(outcomes: Iterable[ChunkOutcome]) -> list[ChunkOutcome]:
    """The chunks whose contacts a snapshot may not record as sent: every fate but
    ``imported``, and an import Constant Contact counted short (which of its contacts
    it left out is not said, so none of them counts)."""
    return [o for o in outcomes if o.fate is not ChunkFate.IMPORTED or o.shortfall > 0]


def chunk_keys(body: bytes) -> Keys:
    """The email keys of an import body's contacts (the keys prepare made of them)."""
    data = orjson.loads(body)
    return email_keys(str(contact["email"]) for contact in data["import_data"])


def _undelivered_keys(
    runs: RunStore, run_id: str, outcomes: list[ChunkOutcome], *, ours: bool
) -> Keys:
    """The keys of the held chunks' contacts, from their staged bodies. A body that is
    gone (or unreadable) leaves the state as it was: the next run then sends every
    change again, which loses nothing; an earlier attempt of this finish that wrote
    the state (and deleted a short body after it) already wrote what this one would."""
    found: list[Keys] = []
    for outcome in outcomes:
        body = runs.read_staged(run_id, outcome.chunk.name)
        if body is None and ours:
            raise _NotWritten("an earlier attempt of this run wrote it")
        try:
            if body is None:
                raise ValueError("gone")
            found.append(chunk_keys(body))
        except (ValueError, KeyError, TypeError) as exc:
            name = outcome.chunk.name
            raise _NotWritten(f"{name} is gone or unreadable ({type(exc).__name__})") from None
    return union(*found) if found else EMPTY


def _written_by(key: str, request: FinishRequest, export: ExportDefinition) -> dict[str, Any]:
    """The header fields every state a run writes has: which export, which run, when,
    and what the export was then."""
    return {
        "key": key,
        "run_id": request.run.run_id,
        "written_at": request.finished_at,
        "mode": export.mode,
        "list_ids": list(export.list_ids),
    }


def _staged_snapshot(runs: RunStore, run_id: str) -> bytes:
    staged = runs.read_staged(run_id, SNAPSHOT_FILE)
    if staged is None:
        raise _NotWritten("the staged snapshot is missing")
    return staged


def _write_partial(
    runs: RunStore,
    states: StateStore,
    request: FinishRequest,
    key: str,
    base: ExportState,
    *,
    ours: bool,
) -> dict[str, Any]:
    """Add mode, partly delivered: the staged snapshot but for the contacts that did
    not go, which keep the old entry (or stay out) and form the retry set."""
    run_id = request.run.run_id
    staged = _staged_snapshot(runs, run_id)
    held = not_fully_delivered(request.outcomes)
    undelivered = _undelivered_keys(runs, run_id, held, ours=ours)
    export = request.run.definition()
    hashed = definition_hash(export)
    old = base if base.header.get("definition_hash") == hashed else None
    keys, digests = delivered_snapshot(old, ExportState.from_bytes(staged), undelivered)
    summary = PrepareSummary.from_json(runs.staged_summary(run_id) or {})
    header = {
        **_written_by(key, request, export),
        "definition_hash": hashed,
        "content_hash": "",  # the next run must read the segment
        "counts": summary.counts(),
        "retry_from": run_id,
    }
    managed = next_managed(base.managed, export.list_ids, None, removed=False)
    state = ExportState(base.header, keys, digests, managed, undelivered).successor(**header)
    states.write(key, state.to_bytes())
    return {
        "key": key,
        "written": True,
        "snapshot": "updated with the delivered contacts (the others are sent again next run)",
        "contacts": state.contacts,
        "retry": {"contacts": int(undelivered.size), "chunks": len(held)},
        "managed": {list_id: int(m.size) for list_id, m in managed.items()},
        "where": states.describe(key),
    }


def retried(runs: RunStore, run_id: str) -> dict[str, Any] | None:
    """What the run's prepare counted as sent again for an earlier run (its summary's
    ``changes.retried``: ``{"contacts": N, "from_run": run id}``), None if nothing."""
    summary = runs.staged_summary(run_id) or {}
    found = (summary.get("changes") or {}).get("retried")
    if not isinstance(found, dict) or not found.get("from_run"):
        return None
    return {"contacts": int(found.get("contacts", 0)), "from_run": str(found["from_run"])}
