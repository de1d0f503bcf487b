"""Mirror mode: members this export added that left the segment leave the list.

Who may be removed (per list, decided by ``find_members`` before anything is sent):
members of the list whose email key is in the export's managed set (the people it
added: new to its segment and not on the list when it first sent them), not in the
segment any more, and not in the last snapshot of another export that sends to the
same list. Nobody else: a member added by hand, or by another export, stays; a
contact is never unsubscribed or deleted, only its membership of the list removed.

Members are found in bulk, never one request per email: one ``contact_exports``
activity of the list with the fields ``contact_id`` and ``email_address`` and its CSV
(three or four requests whatever the list's size). Whether the real export can carry
``contact_id`` is not documented by Constant Contact: when its file has no such column, the
members are paged instead with ``GET /contacts?lists=`` (500 a request).

The plan is staged in the run's staging area (``mirror.npz``: keys and contact ids,
no emails), so ``apply_removals`` and ``finish_run`` read what ``find_members``
decided instead of deciding again after the imports changed the lists.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shared.exports.state import (
    EMPTY,
    Keys,
    contains,
    difference,
    email_keys,
    union,
)
from shared.runs.membership import ListPlan

if TYPE_CHECKING:
    # A type only: run_state (and so prepare) reads plans without aiohttp loaded.
    from shared.constant_contact.client import ConstantContactClient

PLAN_FILE = "mirror.npz"
EXPORT_FIELDS = ("contact_id", "email_address")


@dataclass(frozen=True)
class Members:
    """A list's members: email keys and contact ids, in the same order."""

    keys: Keys
    contact_ids: list[str]
    requests: int
    via: str


async def list_members(
    client: ConstantContactClient, list_id: str, *, poll_interval: float = 2.0
) -> Members:
    """Every member of the list, with as few requests as the API allows."""
    before = client.stats.requests
    raw = await client.export_contacts(
        [list_id], fields=list(EXPORT_FIELDS), poll_interval=poll_interval
    )
    rows = csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
    header = [name.strip().lower() for name in next(rows, [])]
    if "contact_id" in header and "email_address" in header:
        at_id, at_email = header.index("contact_id"), header.index("email_address")
        emails: list[str] = []
        ids: list[str] = []
        width = max(at_id, at_email)
        for row in rows:
            if len(row) > width and row[at_id]:
                ids.append(row[at_id])
                emails.append(row[at_email].strip().lower())
        keys = email_keys(emails)
        return Members(keys, ids, client.stats.requests - before, "contact_export")
    emails, ids = [], []
    async for contact in client.contacts_by_list(list_id):
        if contact.email:
            ids.append(contact.contact_id)
            emails.append(contact.email.strip().lower())
    return Members(email_keys(emails), ids, client.stats.requests - before, "paging")


@dataclass(frozen=True)
class ListChanges:
    """One list's part of the plan."""

    plan: ListPlan
    remove_keys: Keys
    remove_ids: list[str]
    gone: Keys
    """Managed leavers that are no longer members (removed by someone else)."""
    added: Keys
    """New to the segment and not members yet: the export adds them (if it succeeds)."""


def plan_list(
    list_id: str,
    members: Members,
    *,
    segment: Keys,
    previous: Keys,
    managed: Keys,
    claimed: Keys,
) -> ListChanges:
    """Decide one list: all arguments but ``members`` are sorted key arrays.

    ``segment``: this run's contacts; ``previous``: the last snapshot; ``managed``:
    whom this export added to the list; ``claimed``: contacts of other exports'
    snapshots that send to this list.
    """
    candidates = difference(managed, segment)
    leaving = contains(candidates, members.keys)
    held = leaving & contains(claimed, members.keys)
    remove = leaving & ~held
    member_keys = union(members.keys)
    at = np.flatnonzero(remove).tolist()
    plan = ListPlan(
        list_id=list_id,
        members=len(members.contact_ids),
        remove=len(at),
        kept_for_others=int(held.sum()),
    )
    return ListChanges(
        plan=plan,
        remove_keys=union(members.keys[remove]),
        remove_ids=[members.contact_ids[i] for i in at],
        gone=difference(candidates, member_keys),
        added=difference(difference(segment, previous), member_keys),
    )


def write_plan(lists: Sequence[ListChanges]) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, np.ndarray] = {
        "list_ids": np.array([c.plan.list_id for c in lists], dtype=str)
    }
    for i, changes in enumerate(lists):
        arrays[f"remove_keys_{i}"] = changes.remove_keys
        arrays[f"remove_ids_{i}"] = np.array(changes.remove_ids, dtype=str)
        arrays[f"gone_{i}"] = changes.gone
        arrays[f"added_{i}"] = changes.added
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


@dataclass(frozen=True)
class StagedList:
    list_id: str
    remove_keys: Keys
    remove_ids: list[str]
    gone: Keys
    added: Keys


def read_plan(data: bytes) -> dict[str, StagedList]:
    with np.load(io.BytesIO(data), allow_pickle=False) as saved:
        found: dict[str, StagedList] = {}
        for i, list_id in enumerate(saved["list_ids"].tolist()):
            found[str(list_id)] = StagedList(
                list_id=str(list_id),
                remove_keys=saved[f"remove_keys_{i}"].astype(np.uint64),
                remove_ids=[str(x) for x in saved[f"remove_ids_{i}"].tolist()],
                gone=saved[f"gone_{i}"].astype(np.uint64),
                added=saved[f"added_{i}"].astype(np.uint64),
            )
        return found


def next_managed(
    managed: Mapping[str, Keys],
    list_ids: Sequence[str],
    plan: Mapping[str, StagedList] | None,
    *,
    removed: bool,
) -> dict[str, Keys]:
    """The managed sets a finished run leaves, for the export's current lists.

    With a plan: those it added join; those no longer members leave; those it
    removed leave when ``removed`` (their removal completed). Without one (no look
    at the lists this run), the sets stay as they were.
    """
    result: dict[str, Keys] = {}
    for list_id in list_ids:
        current = managed.get(list_id, EMPTY)
        staged = plan.get(list_id) if plan is not None else None
        if staged is not None:
            dropped = union(staged.gone, staged.remove_keys if removed else EMPTY)
            current = union(difference(current, dropped), staged.added)
        if current.size:
            result[list_id] = current
    return result
