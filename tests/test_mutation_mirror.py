"""Mirror mode (shared/runs/mirror.py, and the safety stop in bookkeeping.py RunTally), in
pieces small enough to state exactly: who leaves a list (a member this export added
that left its segment and no other export still sends), who is kept, what the staged
plan carries from the look at the lists to the removal and to the next run's managed
set, and when a run stops to ask before it removes anyone. Every expectation is built
from plain Python sets of emails, not from the module's own array helpers. A wrong
turn here takes people off a list they belong on."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from shared.constant_contact.models import Contact
from shared.constant_contact.transport import ClientStats
from shared.exports.definitions import ExportDefinition
from shared.exports.state import EMPTY, Keys, email_key
from shared.runs.bookkeeping import RunTally
from shared.runs.contract import RunInput, RunOptions
from shared.runs.membership import ListPlan, MembersResult
from shared.runs.mirror import (
    ListChanges,
    Members,
    StagedList,
    list_members,
    next_managed,
    plan_list,
    read_plan,
    write_plan,
)
from shared.runs.prepared import Changes, PreparedRun

LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
OTHER_LIST = "0f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"


def key(email: str) -> int:
    return int.from_bytes(email_key(email), "little")


def keys(*emails: str) -> Keys:
    """Sorted unique keys, as the module's sets are kept."""
    return np.array(sorted({key(e) for e in emails}), dtype=np.uint64)


def emails_of(found: Keys, among: Sequence[str]) -> set[str]:
    by_key = {key(e): e for e in among}
    return {by_key[int(k)] for k in found.tolist()}


def members(*emails: str) -> Members:
    """A list's members in list order (not sorted), with ids id-<email>."""
    return Members(
        np.array([key(e) for e in emails], dtype=np.uint64),
        [f"id-{e}" for e in emails],
        requests=3,
        via="contact_export",
    )


PEOPLE = [f"p{i}@example.com" for i in range(12)]


def test_only_managed_leavers_nobody_else_claims_are_removed() -> None:
    p = PEOPLE
    # on the list: p0..p7 (p8 left the list by someone else's hand)
    on_list = members(p[7], p[0], p[1], p[2], p[3], p[4], p[5], p[6])
    segment = keys(p[0], p[1], p[9], p[10])  # this run's contacts
    previous = keys(p[0], p[1], p[2], p[3], p[4], p[8], p[9])  # the last snapshot
    managed = keys(p[0], p[2], p[3], p[4], p[8])  # whom this export added
    claimed = keys(p[4], p[11])  # another export's snapshot still has p4
    changes = plan_list(
        LIST, on_list, segment=segment, previous=previous, managed=managed, claimed=claimed
    )
    # leavers this export added: p2, p3, p4, p8; p4 is claimed; p8 is no member any more
    assert changes.remove_ids == ["id-" + p[2], "id-" + p[3]]  # in list order
    assert emails_of(changes.remove_keys, p) == {p[2], p[3]}
    assert changes.remove_keys.tolist() == sorted(changes.remove_keys.tolist())
    assert emails_of(changes.gone, p) == {p[8]}
    # new to the segment since the last snapshot and not on the list yet: p10 (p9 was
    # in the snapshot; p0 and p1 are members)
    assert emails_of(changes.added, p) == {p[10]}
    assert changes.plan == ListPlan(LIST, members=8, remove=2, kept_for_others=1)
    assert changes.plan.share() == 2 / 8


def test_a_member_added_by_hand_or_still_in_the_segment_stays() -> None:
    p = PEOPLE
    changes = plan_list(
        LIST,
        members(p[0], p[1], p[2]),
        segment=keys(p[1]),
        previous=keys(p[1]),
        managed=keys(p[1]),  # p0 and p2 were never added by this export
        claimed=EMPTY,
    )
    assert changes.remove_ids == []
    assert changes.remove_keys.size == 0
    assert changes.plan == ListPlan(LIST, members=3, remove=0, kept_for_others=0)


def test_an_empty_list_and_an_empty_segment() -> None:
    p = PEOPLE
    empty = Members(EMPTY, [], requests=3, via="contact_export")
    changes = plan_list(
        LIST, empty, segment=keys(p[0]), previous=EMPTY, managed=keys(p[1]), claimed=EMPTY
    )
    assert changes.plan == ListPlan(LIST, members=0, remove=0, kept_for_others=0)
    assert changes.plan.share() == 0.0
    assert emails_of(changes.gone, p) == {p[1]}
    assert emails_of(changes.added, p) == {p[0]}
    everyone = plan_list(
        LIST,
        members(p[0], p[1]),
        segment=EMPTY,
        previous=keys(p[0], p[1]),
        managed=keys(p[0], p[1]),
        claimed=EMPTY,
    )
    assert everyone.plan.share() == 1.0
    assert sorted(everyone.remove_ids) == ["id-" + p[0], "id-" + p[1]]


def test_the_staged_plan_reads_back_as_written() -> None:
    p = PEOPLE
    one = plan_list(
        LIST,
        members(p[0], p[1], p[2]),
        segment=keys(p[0], p[5]),
        previous=keys(p[0]),
        managed=keys(p[1], p[2], p[3]),
        claimed=keys(p[2]),
    )
    two = ListChanges(
        ListPlan(OTHER_LIST, members=0), EMPTY, [], gone=keys(p[7]), added=keys(p[8], p[9])
    )
    staged = read_plan(write_plan([one, two]))
    assert list(staged) == [LIST, OTHER_LIST]
    first = staged[LIST]
    assert first.list_id == LIST
    assert first.remove_ids == ["id-" + p[1]]
    assert first.remove_keys.tolist() == one.remove_keys.tolist()
    assert first.remove_keys.dtype == np.uint64
    assert first.gone.tolist() == one.gone.tolist()
    assert first.added.tolist() == one.added.tolist()
    second = staged[OTHER_LIST]
    assert (second.remove_ids, second.remove_keys.size) == ([], 0)
    assert emails_of(second.gone, p) == {p[7]}
    assert emails_of(second.added, p) == {p[8], p[9]}
    assert read_plan(write_plan([])) == {}


def test_a_staged_plan_that_needs_unpickling_is_refused() -> None:
    """The plan is read back from the staging area: loading it must never run code."""
    buffer = io.BytesIO()
    np.savez(buffer, list_ids=np.array([{"not": "an array of text"}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_plan(buffer.getvalue())


def test_the_managed_sets_a_run_leaves() -> None:
    p = PEOPLE
    managed = {LIST: keys(p[0], p[1], p[2]), OTHER_LIST: keys(p[5])}
    plan = {
        LIST: StagedList(
            LIST,
            remove_keys=keys(p[1]),
            remove_ids=["id-" + p[1]],
            gone=keys(p[2]),
            added=keys(p[3]),
        ),
    }
    removed = next_managed(managed, [LIST, OTHER_LIST], plan, removed=True)
    assert emails_of(removed[LIST], p) == {p[0], p[3]}  # p1 removed, p2 gone, p3 added
    assert emails_of(removed[OTHER_LIST], p) == {p[5]}  # not looked at: as it was
    kept = next_managed(managed, [LIST, OTHER_LIST], plan, removed=False)
    assert emails_of(kept[LIST], p) == {p[0], p[1], p[3]}  # the removal did not complete
    unplanned = next_managed(managed, [LIST], None, removed=True)
    assert list(unplanned) == [LIST]
    assert unplanned[LIST].tolist() == managed[LIST].tolist()
    # a list no longer sent to is dropped; an emptied set is left out
    emptied = {LIST: StagedList(LIST, keys(p[0]), ["x"], gone=keys(p[1], p[2]), added=EMPTY)}
    assert next_managed({LIST: keys(p[0], p[1], p[2])}, [LIST], emptied, removed=True) == {}
    joiner = {OTHER_LIST: StagedList(OTHER_LIST, EMPTY, [], EMPTY, keys(p[4]))}
    new = next_managed({}, [OTHER_LIST], joiner, removed=False)
    assert emails_of(new[OTHER_LIST], p) == {p[4]}


# --- finding the members ---------------------------------------------------------------------


class Client:
    """As much of ConstantContactClient as list_members uses."""

    def __init__(self, export: bytes, paged: Sequence[Contact] = ()) -> None:
        self.stats = ClientStats()
        self.export = export
        self.paged = list(paged)
        self.asked: list[tuple[list[str], list[str], float]] = []
        self.paged_list: str | None = None

    async def export_contacts(
        self, list_ids: list[str], *, fields: list[str], poll_interval: float
    ) -> bytes:
        self.asked.append((list_ids, fields, poll_interval))
        self.stats.requests += 3
        return self.export

    async def contacts_by_list(self, list_id: str) -> AsyncIterator[Contact]:
        self.paged_list = list_id
        self.stats.requests += 1
        for contact in self.paged:
            yield contact


async def test_members_come_from_one_contact_export() -> None:
    raw = (
        "\ufeffEmail_Address,Contact_Id,First_Name\r\n"
        " Ana@Example.com ,c1,Ana\r\n"
        "bo@example.com,c2,Bo\r\n"
        "no-id@example.com,,X\r\n"  # no contact id: cannot be removed, not listed
        "short\r\n"  # a row cut short
        "cy@example.com,c3\r\n"
    ).encode()
    client = Client(raw)
    client.stats.requests = 5  # requests before this one are not its own
    found = await list_members(client, LIST, poll_interval=0.5)  # type: ignore[arg-type]
    assert client.asked == [([LIST], ["contact_id", "email_address"], 0.5)]
    assert found.contact_ids == ["c1", "c2", "c3"]
    expected = [key("ana@example.com"), key("bo@example.com"), key("cy@example.com")]
    assert found.keys.tolist() == expected
    assert (found.requests, found.via) == (3, "contact_export")


async def test_members_are_paged_when_the_export_has_no_contact_ids() -> None:
    paged = [
        Contact("c1", " Ana@Example.com"),
        Contact("c2", None),
        Contact("c3", "cy@example.com"),
    ]
    client = Client(b"email_address,first_name\r\nana@example.com,Ana\r\n", paged)
    client.stats.requests = 7
    found = await list_members(client, LIST)  # type: ignore[arg-type]
    assert client.paged_list == LIST
    assert client.asked[0][2] == 2.0  # the default poll interval
    assert found.contact_ids == ["c1", "c3"]
    assert found.keys.tolist() == [key("ana@example.com"), key("cy@example.com")]
    assert (found.requests, found.via) == (4, "paging")
    empty = await list_members(Client(b""), LIST)  # type: ignore[arg-type]
    assert (empty.contact_ids, empty.via) == ([], "paging")


# --- the safety stop (shared/runs/bookkeeping.py RunTally) ---------------------------------


def tally(
    *,
    mode: str = "mirror",
    share: float = 0.2,
    confirm: bool = False,
    contacts: int = 10,
    previous: int = 10,
    needs_members: bool = True,
    error: str | None = None,
) -> RunTally:
    definition = ExportDefinition(
        (LIST,), {"email": "Email"}, name="mirror-export", mode=mode, max_removal_share=share
    )
    run = RunInput.create(
        "mirror-export.0123456789abcdef0123456789abcdef",
        definition,
        "az://inbox/x",
        requested_at=datetime(2026, 1, 1, tzinfo=UTC),
        options=RunOptions(confirm_removals=confirm),
    )
    t = RunTally(run, "2026-01-01T00:00:00Z")
    changes = Changes(
        mode=mode, incremental=True, previous_contacts=previous, needs_members=needs_members
    )
    t.prepared_run(PreparedRun(run.run_id, contacts=contacts, error=error, changes=changes))
    return t


def found(*plans: ListPlan, **kw: Any) -> MembersResult:
    return MembersResult(lists=plans, requests=3, via="contact_export", **kw)


@pytest.mark.parametrize(
    ("members", "remove", "stops"),
    [(100, 20, False), (100, 21, True), (10, 2, False), (10, 3, True), (0, 0, False)],
)
def test_a_mirror_run_stops_past_the_share_it_may_remove(
    members: int, remove: int, stops: bool
) -> None:
    t = tally(share=0.2)
    t.members_found(found(ListPlan(LIST, members=members, remove=remove)))
    assert t.awaits_confirmation() is stops
    assert t.removals_due() is (not stops and remove > 0)
    if stops:
        assert t.confirmation is not None
        assert (
            f"would remove {remove:,} of the {members:,} members of list {LIST} "
            f"({remove / members:.0%}), more than the 20% allowed"
        ) in t.confirmation
        assert "--run-id mirror-export.0123456789abcdef0123456789abcdef --confirm-removals" in (
            t.confirmation
        )


def test_the_worst_list_is_named_and_confirming_goes_ahead() -> None:
    plans = (
        ListPlan(LIST, members=100, remove=30),
        ListPlan(OTHER_LIST, members=10, remove=9),
        ListPlan("third", members=100, remove=1),
    )
    t = tally(share=0.25)
    t.members_found(found(*plans))
    assert t.confirmation is not None
    assert f"remove 9 of the 10 members of list {OTHER_LIST} (90%)" in t.confirmation
    confirmed = tally(share=0.25, confirm=True)
    confirmed.members_found(found(*plans))
    assert not confirmed.awaits_confirmation()
    assert confirmed.removals_due()


def test_members_that_could_not_be_read_stop_the_run() -> None:
    t = tally()
    t.members_found(found(error="403 forbidden"))
    assert t.error == "the lists' members could not be read, so nothing was sent: 403 forbidden"
    assert t.stopped()
    assert not t.removals_due()
    q = tally()
    q.members_found(found(ListPlan(LIST, 10, 1), resets_at="2026-01-02T00:00:00Z"))
    assert q.resets_at == "2026-01-02T00:00:00Z"
    assert q.stopped()
    assert q.confirmation is None
    assert not q.removals_due()


def test_removals_are_due_once_and_only_when_planned() -> None:
    t = tally()
    assert not t.removals_due()  # the lists were not looked at yet
    t.members_found(found(ListPlan(LIST, 100, 0)))
    assert not t.removals_due()  # nobody to remove
    t.members_found(found(ListPlan(LIST, 100, 1)))
    assert t.removals_due()
    t.removals_failed("boom")
    assert not t.removals_due()  # asked once


@pytest.mark.parametrize(
    ("contacts", "previous", "confirm", "mode", "stops"),
    [
        (0, 40, False, "mirror", True),
        (0, 0, False, "mirror", False),  # empty before too: nothing to protect
        (1, 40, False, "mirror", False),
        (0, 40, True, "mirror", False),
        (0, 40, False, "add", False),
    ],
)
def test_an_empty_segment_after_a_full_one_stops_a_mirror_run(
    contacts: int, previous: int, confirm: bool, mode: str, stops: bool
) -> None:
    t = tally(contacts=contacts, previous=previous, confirm=confirm, mode=mode)
    t.check_empty_segment()
    assert t.awaits_confirmation() is stops
    if stops:
        assert t.confirmation is not None
        assert t.confirmation.startswith(
            "the segment is empty but the last run sent 40 contacts: in mirror mode this "
            "would remove every member this export added."
        )


def test_a_stopped_run_neither_stops_to_ask_nor_looks_at_the_lists() -> None:
    failed = tally(contacts=0, previous=40, error="unreadable file")
    failed.check_empty_segment()
    assert failed.confirmation is None
    assert not failed.needs_members()
    assert tally().needs_members()
    assert not tally(needs_members=False).needs_members()
    assert not tally(mode="add").needs_members()
    assert tally().mirror()
    assert not tally(mode="add").mirror()


@pytest.mark.parametrize(("members", "remove", "share"), [(4, 1, 0.25), (3, 0, 0.0), (0, 5, 0.0)])
def test_the_share_of_a_list(members: int, remove: int, share: float) -> None:
    assert ListPlan(LIST, members=members, remove=remove).share() == share
