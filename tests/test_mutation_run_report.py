"""The run report (shared/runs/report.py), written out in full for a run where every kind
of thing happened: each count below is worked out by hand from the chunks' fates, and
the two reconciliations the README promises are checked on it. Then its text, line by
line. A report that miscounts what was not delivered, or names the wrong body to
resend, is contacts lost without anyone knowing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.exports.definitions import ExportDefinition
from shared.runs.contract import FinishRequest, RunInput, RunStatus
from shared.runs.membership import ListPlan, MembersResult, Removals
from shared.runs.prepared import Changes, ChunkRef, PreparedRun
from shared.runs.report import build_report, counts_text, render, render_changes
from shared.runs.uploads import ChunkFate, ChunkOutcome, ImportState, RequestCounts

LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
RUN_ID = "weekly.0123456789abcdef0123456789abcdef"
STAGING = "/h/runs/weekly/staging"
HINT = "ccexport run ... --run-id weekly.0123456789abcdef0123456789abcdef"


def run_input() -> RunInput:
    definition = ExportDefinition((LIST,), {"email": "Email"}, name="weekly", mode="mirror")
    return RunInput.create(
        RUN_ID,
        definition,
        "az://inbox/Weekly/Contacts/2026/03/04/1100",
        connection="mkt",
        trigger="blob",
        requested_at=datetime(2026, 3, 4, 11, 5, tzinfo=UTC),
    )


def chunk(index: int, contacts: int) -> ChunkRef:
    return ChunkRef(index, f"chunks/chunk-{index:05d}.json", contacts, 1000 + index)


def state(activity: str, name: str, people: int, **counts: Any) -> ImportState:
    return ImportState(activity, name, percent_done=100, person_count=people, **counts)


# Seven bodies, 350 contacts; 50 more contacts were unchanged (not sent).
OUTCOMES = (
    ChunkOutcome(chunk(1, 100), ChunkFate.IMPORTED, "a1", False, 1, state("a1", "completed", 100)),
    ChunkOutcome(
        chunk(2, 100),
        ChunkFate.IMPORTED,
        "a2",
        True,
        2,
        state(
            "a2",
            "completed",
            95,
            error_count=3,
            correctable_count=2,
            cannot_add_to_list_count=1,
            activity_errors=("row 3: invalid phone",),
        ),
    ),
    ChunkOutcome(
        chunk(3, 50), ChunkFate.IMPORT_FAILED, "a3", False, 1, state("a3", "failed", 0), "failed"
    ),
    ChunkOutcome(chunk(4, 40), ChunkFate.UPLOAD_FAILED, None, False, 5, None, "refused (400)"),
    ChunkOutcome(chunk(5, 30), ChunkFate.NOT_SENT, None, False, 0, None, "quota exhausted"),
    ChunkOutcome(chunk(6, 20), ChunkFate.UNCONFIRMED, "a6", False, 1, state("a6", "processing", 0)),
    ChunkOutcome(chunk(7, 10), ChunkFate.ACCEPTED, "a7", False, 1, None),
)
PREPARED = PreparedRun(
    RUN_ID,
    tuple(o.chunk for o in OUTCOMES),
    source="az://inbox/Weekly/Contacts/2026/03/04/1100 (2 parts)",
    staging=STAGING,
    rows_read=420,
    contacts=400,
    duplicates=7,
    rejected=13,
    reject_reasons={"invalid_email": 10, "ragged_row": 3},
    fewest_chunks_possible=6,
    changes=Changes(
        mode="mirror", incremental=True, added=300, updated=50, unchanged=50, left=12, sent=350
    ),
)
REQUESTS = RequestCounts(
    import_requests=12, import_resends=1, status_polls=4, poll_requests=5, polls_in_one_request=3
)
MEMBERS = MembersResult(
    lists=(ListPlan(LIST, members=3000, remove=12, kept_for_others=2),),
    requests=3,
    via="contact_export",
)


def request(**changes: Any) -> FinishRequest:
    values: dict[str, Any] = {
        "run": run_input(),
        "status": RunStatus.QUOTA_EXHAUSTED,
        "started_at": "2026-03-04T11:05:02Z",
        "finished_at": "2026-03-04T11:09:40Z",
        "prepared": PREPARED,
        "outcomes": OUTCOMES,
        "requests": REQUESTS,
        "error": None,
        "resets_at": "2026-03-05T00:00:00Z",
        "members": MEMBERS,
        "removals": Removals(planned=12, asked=12, activities=1, activities_completed=1),
    }
    values.update(changes)
    return FinishRequest(**values)


def report(**changes: Any) -> dict[str, Any]:
    return build_report(
        request(**changes),
        staging=STAGING,
        rejects_file="/h/runs/weekly/rejects.csv",
        resume_hint=HINT,
        state={"written": True, "at": "state/weekly"},
    )


def test_the_counts_of_a_run_where_everything_happened() -> None:
    counts = report()["counts"]
    assert counts == {
        "rows_read": 420,
        "contacts": 400,
        "duplicates": 7,
        "rejected": 13,
        "contacts_sent": 100 + 100 + 50 + 20 + 10,  # bodies with an import activity
        "contacts_delivered": 100 + 95,  # body 2 was counted 5 short
        "contacts_not_delivered": 50 + 40 + 30 + 5,  # failed, refused, not sent; the 5
        "contacts_unconfirmed": 20 + 10,  # no final state seen, or not finished
        "contacts_unchanged": 50,
        "person_count": 195,
        "cannot_add_to_list": 1,
        "error_count": 3,
        "correctable_count": 2,
    }
    # the README's two reconciliations
    assert counts["rows_read"] == counts["contacts"] + counts["duplicates"] + counts["rejected"]
    assert counts["contacts"] == (
        counts["contacts_delivered"]
        + counts["contacts_not_delivered"]
        + counts["contacts_unconfirmed"]
        + counts["contacts_unchanged"]
    )


def test_the_rest_of_the_report() -> None:
    r = report()
    assert {k: r[k] for k in ("run_id", "status", "export", "list_ids", "connection")} == {
        "run_id": RUN_ID,
        "status": "quota_exhausted",
        "export": "weekly",
        "list_ids": [LIST],
        "connection": "mkt",
    }
    assert (r["trigger"], r["source"], r["error"]) == ("blob", PREPARED.source, None)
    assert (r["requested_at"], r["started_at"], r["finished_at"]) == (
        "2026-03-04T11:05:00Z",
        "2026-03-04T11:05:02Z",
        "2026-03-04T11:09:40Z",
    )
    assert r["chunks"] == {
        "total": 7,
        "fewest_possible": 6,
        "accepted": 1,
        "imported": 2,
        "import_failed": 1,
        "upload_failed": 1,
        "not_sent": 1,
        "unconfirmed": 1,
    }
    assert r["not_delivered"] == {
        "contacts": 125 + 30,
        "chunks": [f"chunks/chunk-{i:05d}.json" for i in (3, 4, 5, 6, 7)],
        "kept_in": STAGING,
        "how_to_resend": HINT,
    }
    assert r["mismatches"] == [
        {
            "chunk": "chunks/chunk-00002.json",
            "sent": 100,
            "person_count": 95,
            "error_count": 3,
            "correctable_count": 2,
        }
    ]
    assert r["rejects"] == {
        "rejected": 13,
        "duplicates": 7,
        "reasons": {"invalid_email": 10, "ragged_row": 3},
        "file": "/h/runs/weekly/rejects.csv",
    }
    assert r["quota"] == {
        "exhausted": True,
        "resets_at": "2026-03-05T00:00:00Z",
        "resume": f"after 2026-03-05T00:00:00Z: {HINT}",
    }
    assert r["requests"] == {
        "import_requests": 12,
        "import_resends": 1,
        "status_polls": 4,
        "poll_requests": 5,
        "polls_in_one_request": 3,
        "member_requests": 0,
        "removal_requests": 0,
        "removal_poll_requests": 0,
        "fewest_import_requests": 7,
        "total": 17,  # 12 imports and 5 poll requests
        "estimated": None,  # no plan in this request: the quota planning tests have one
        "estimate": None,
    }
    assert r["quota_plan"] is None
    assert r["changes"] == {
        "mode": "mirror",
        "incremental": True,
        "added": 300,
        "updated": 50,
        "unchanged": 50,
        "left": 12,
        "removed": 12,
        "content_unchanged": False,
        "state": {"written": True, "at": "state/weekly"},
    }
    assert r["removals"] == {
        "lists": [
            {"list_id": LIST, "members": 3000, "remove": 12, "kept_for_others": 2, "share": 0.004}
        ],
        "found_by": "contact_export",
        "planned": 12,
        "asked": 12,
        "activities": 1,
        "activities_completed": 1,
        "error": None,
        "needs_confirmation": None,
    }


def test_each_body_says_what_became_of_it_and_where_an_undelivered_one_is() -> None:
    entries = report()["chunk_outcomes"]
    assert [e["index"] for e in entries] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["kept_at"] for e in entries] == [
        None,
        None,
        f"{STAGING}/chunks/chunk-00003.json",
        f"{STAGING}/chunks/chunk-00004.json",
        f"{STAGING}/chunks/chunk-00005.json",
        f"{STAGING}/chunks/chunk-00006.json",
        None,  # accepted: Constant Contact has it; it is only not finished
    ]
    assert entries[1] == {
        "index": 2,
        "name": "chunks/chunk-00002.json",
        "contacts": 100,
        "bytes": 1002,
        "fate": "imported",
        "activity_id": "a2",
        "already_accepted": True,
        "upload_requests": 2,
        "state": "completed",
        "person_count": 95,
        "error_count": 3,
        "correctable_count": 2,
        "cannot_add_to_list_count": 1,
        "activity_errors": ["row 3: invalid phone"],
        "shortfall": 5,
        "error": None,
        "kept_at": None,
    }
    assert entries[3] == {
        "index": 4,
        "name": "chunks/chunk-00004.json",
        "contacts": 40,
        "bytes": 1004,
        "fate": "upload_failed",
        "activity_id": None,
        "already_accepted": False,
        "upload_requests": 5,
        "state": None,
        "person_count": None,
        "error_count": None,
        "correctable_count": None,
        "cannot_add_to_list_count": None,
        "activity_errors": [],
        "shortfall": 0,
        "error": "refused (400)",
        "kept_at": f"{STAGING}/chunks/chunk-00004.json",
    }
    assert entries[2]["state"] == "failed"
    assert entries[5]["state"] == "processing"


def test_a_run_that_delivered_everything_holds_nothing_back() -> None:
    one = (OUTCOMES[0],)
    prepared = PreparedRun(RUN_ID, (OUTCOMES[0].chunk,), rows_read=100, contacts=100)
    r = report(
        status=RunStatus.COMPLETED,
        outcomes=one,
        prepared=prepared,
        resets_at=None,
        members=None,
        removals=None,
    )
    assert r["not_delivered"] == {
        "contacts": 0,
        "chunks": [],
        "kept_in": None,
        "how_to_resend": None,
    }
    assert (r["quota"], r["mismatches"], r["removals"]) == (None, [], None)
    assert r["source"] == run_input().source  # the prepared run named none
    assert r["changes"]["removed"] == 0
    assert r["changes"]["mode"] == "add"
    assert r["chunks"] == {  # fates no body had are there, at 0
        "total": 1,
        "fewest_possible": 0,
        "accepted": 0,
        "imported": 1,
        "import_failed": 0,
        "upload_failed": 0,
        "not_sent": 0,
        "unconfirmed": 0,
    }


def test_a_share_is_rounded_to_four_places() -> None:
    thirds = MembersResult(lists=(ListPlan(LIST, members=3, remove=1),), via="paging")
    assert report(members=thirds)["removals"]["lists"][0]["share"] == 0.3333


def test_not_delivered_is_said_even_when_nothing_is_unconfirmed() -> None:
    lost = (OUTCOMES[0], OUTCOMES[3])  # imported; refused
    prepared = PreparedRun(RUN_ID, tuple(o.chunk for o in lost), rows_read=140, contacts=140)
    r = report(status=RunStatus.COMPLETED_WITH_ERRORS, outcomes=lost, prepared=prepared)
    lines = render(r).splitlines()
    assert "  NOT delivered           40" in lines
    assert not any(line.startswith("  unconfirmed") for line in lines)
    unconfirmed = (OUTCOMES[0], OUTCOMES[5])  # imported; no final state seen
    prepared = PreparedRun(RUN_ID, tuple(o.chunk for o in unconfirmed), contacts=120)
    lines = render(report(outcomes=unconfirmed, prepared=prepared)).splitlines()
    assert "  NOT delivered            0" in lines
    assert "  unconfirmed             20" in lines


def test_removals_that_did_not_finish_removed_nobody_in_the_counts() -> None:
    unfinished = Removals(planned=12, asked=12, activities=2, activities_completed=1)
    assert report(removals=unfinished)["changes"]["removed"] == 0
    failed = Removals(planned=12, asked=5, activities=1, activities_completed=1, error="boom")
    r = report(removals=failed)
    assert (r["changes"]["removed"], r["removals"]["error"], r["removals"]["asked"]) == (
        0,
        "boom",
        5,
    )


def test_a_run_stopped_for_confirmation_says_why() -> None:
    why = "this mirror run would remove 900 of the 1,000 members"
    r = report(status=RunStatus.NEEDS_CONFIRMATION, removals=None, confirmation=why)
    assert r["removals"]["needs_confirmation"] == why
    assert (r["removals"]["asked"], r["removals"]["activities"]) == (0, 0)
    assert r["removals"]["activities_completed"] == 0
    assert r["changes"]["removed"] == 0
    unread = MembersResult(error="403 forbidden")
    r = report(members=unread, removals=None, status=RunStatus.FAILED)
    assert r["removals"]["error"] == "403 forbidden"
    assert r["removals"]["lists"] == []
    only_asked = report(members=None, removals=None, confirmation="the segment is empty")
    assert only_asked["removals"] == {
        "lists": [],
        "found_by": None,
        "planned": 0,
        "asked": 0,
        "activities": 0,
        "activities_completed": 0,
        "error": None,
        "needs_confirmation": "the segment is empty",
    }


def test_a_run_that_failed_before_it_prepared_anything() -> None:
    r = report(
        status=RunStatus.FAILED,
        prepared=None,
        outcomes=(),
        error="the file has no Email column",
        resets_at=None,
        members=None,
        removals=None,
    )
    assert set(r["counts"].values()) == {0}
    assert r["chunks"]["fewest_possible"] == 0
    assert r["rejects"] == {
        "rejected": 0,
        "duplicates": 0,
        "reasons": {},
        "file": "/h/runs/weekly/rejects.csv",
    }
    assert r["source"] == "az://inbox/Weekly/Contacts/2026/03/04/1100"
    assert r["error"] == "the file has no Email column"
    assert r["changes"]["mode"] == "add"
    text = render(r)
    assert text.splitlines()[0] == f"run {RUN_ID}: failed"
    assert "  error           the file has no Email column" in text.splitlines()


# --- the text ----------------------------------------------------------------------------------


def test_the_text_of_a_run_where_everything_happened() -> None:
    assert render(report()).splitlines() == [
        f"run {RUN_ID}: quota exhausted",
        f"  source          {PREPARED.source}",
        "  rows read              420",
        "  contacts               400  (duplicates 7; rejected 13: 10 invalid_email, 3 ragged_row)",
        "  delivered              195  in 2 of 7 imports (Constant Contact counted 195)",
        "  added                  300  since the last run",
        "  updated                 50",
        "  unchanged               50  (not sent again)",
        "  left segment            12",
        "  removed                 12  (mirror mode; planned 12)",
        f"    list {LIST}: 3,000 members, 12 to remove (0.4%), 2 kept for other exports",
        "  NOT delivered          125",
        "  unconfirmed             30",
        "  not listed               1  (unsubscribed earlier)",
        "  requests        12 imports for 7 chunks (fewest possible 6); "
        "4 status polls in 5 requests",
        "  ! chunks/chunk-00002.json: imported, 100 contacts (5 contacts not counted)",
        "  ! chunks/chunk-00003.json: import failed, 50 contacts (failed)",
        "  ! chunks/chunk-00004.json: upload failed, 40 contacts (refused (400))",
        "  ! chunks/chunk-00005.json: not sent, 30 contacts (quota exhausted)",
        "  ! chunks/chunk-00006.json: unconfirmed, 20 contacts (0 contacts not counted)",
        "  ! chunks/chunk-00007.json: accepted, 10 contacts (0 contacts not counted)",
        "  ! chunks/chunk-00002.json: sent 100, Constant Contact counted 95 "
        "(errors 3, correctable 2)",
        f"  kept for resend {STAGING}",
        f"  to resend       {HINT}",
        "  quota           exhausted; resets at 2026-03-05T00:00:00Z",
        "  rejects         /h/runs/weekly/rejects.csv",
    ]


def test_the_text_of_a_quiet_run_and_its_singulars() -> None:
    one = (OUTCOMES[0],)
    prepared = PreparedRun(
        RUN_ID, (OUTCOMES[0].chunk,), source="f.csv", rows_read=1_234_567, contacts=100
    )
    quiet = report(
        status=RunStatus.COMPLETED,
        outcomes=one,
        prepared=prepared,
        resets_at=None,
        members=None,
        removals=None,
        requests=RequestCounts(import_requests=1, status_polls=1, poll_requests=1),
    )
    quiet["rejects"]["file"] = None
    assert render(quiet).splitlines() == [
        f"run {RUN_ID}: completed",
        "  source          f.csv",
        "  rows read        1,234,567",
        "  contacts               100  (duplicates 0; rejected 0)",
        "  delivered              100  in 1 of 1 imports (Constant Contact counted 100)",
        "  added                    0  (no earlier run to compare)",
        "  updated                  0",
        "  unchanged                0  (not sent again)",
        "  requests        1 import for 1 chunk (fewest possible 0); 1 status poll in 1 request",
    ]


def test_the_text_of_a_run_that_asks_for_confirmation() -> None:
    why = "this mirror run would remove 900 of the 1,000 members"
    text = render(report(status=RunStatus.NEEDS_CONFIRMATION, confirmation=why, resets_at=None))
    assert f"  NEEDS CONFIRMATION  {why}" in text.splitlines()
    assert not any(line.startswith("  quota") for line in text.splitlines())


def test_the_changes_lines() -> None:
    assert render_changes(None, None) == []
    assert render_changes({}, None) == []
    same = {"content_unchanged": True, "unchanged": 1500}
    assert render_changes(same, None) == [
        "  unchanged            1,500  (the same segment as last time: nothing to send)"
    ]
    mirror = {
        "mode": "mirror",
        "incremental": True,
        "added": 1,
        "updated": 2,
        "unchanged": 3,
        "left": 0,
        "removed": 0,
        "removal_candidates": 7,
    }
    assert render_changes(mirror, None) == [
        "  added                    1  since the last run",
        "  updated                  2",
        "  unchanged                3  (not sent again)",
        "  removed                  0  (mirror mode; planned 7)",
    ]
    lists = {"planned": 4, "lists": [{"list_id": "L", "members": 8, "remove": 4, "share": 0.5}]}
    assert render_changes({**mirror, "removed": 4}, lists)[-2:] == [
        "  removed                  4  (mirror mode; planned 4)",
        "    list L: 8 members, 4 to remove (50.0%)",
    ]
    assert (
        render_changes({"mode": "mirror", "added": 0, "updated": 0, "unchanged": 0}, None)[-1]
        == "  removed                  0  (mirror mode; planned 0)"
    )


def test_counts_read_as_text() -> None:
    assert counts_text({"invalid_email": 2, "ragged_row": 1}) == "2 invalid_email, 1 ragged_row"
    assert counts_text({"duplicate": 12345}) == "12,345 duplicate"
    assert counts_text({}) == ""
