"""The console's runs pages without a browser: what a run's page makes of its status and
report (the words, the estimate of the time left, what did not go), the rejects search,
and the handlers over Azurite and the Durable fake: who may read a run, download and
search its rejects, and confirm its removals. The pages in a browser, against the
sandbox, are tests/browser/test_console_runs.py."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import pytest

from functions import http_api
from functions.console import runs as pages
from shared.console import safety
from shared.console.confirming import inbox_path
from shared.console.rejects_search import (
    MAX_MATCHES,
    Query,
    csv_rows,
    rejects_of,
    search,
    search_file,
    search_run,
)
from shared.console.run_view import (
    RunState,
    confirmation_of,
    duration_words,
    progress_json,
    progress_of,
    report_view,
    time_left,
    verdict,
)
from shared.errors import InputError
from shared.prepare.outputs import RejectsWriter
from shared.runs.contract import RunInput
from shared.runs.store import BlobRunStore, LocalRunStore
from shared.segments.inbox import FolderInbox
from tests.support.function_harness import (
    AppEnv,
    DurableFake,
    http_request,
    response_json,
)
from tests.support.http_calls import (
    ADMIN,
    DEFINITION,
    EXPORT,
    MARKETING,
    RUN,
    SALES,
    call,
    consent,
    mark_connected,
    put_connection,
)

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def state(phase: str, runtime: str = "Running", minutes_ago: float = 10, **counts: int) -> RunState:
    return RunState(
        runtime_status=runtime,
        custom_status={"phase": phase, **counts},
        created_time=NOW - timedelta(minutes=minutes_ago),
    )


# --- the estimate and the words -----------------------------------------------------------


def test_the_time_left_is_the_pace_so_far_applied_to_what_is_left() -> None:
    assert time_left(imported=1_000, to_import=4_000, elapsed=60) == 180
    assert time_left(imported=4_000, to_import=4_000, elapsed=60) == 0
    for unknown in ((0, 4_000, 60), (1_000, 4_000, 0), (5, 0, 60)):
        assert time_left(*unknown) is None
    assert duration_words(20) == "less than a minute"
    assert duration_words(61) == "about 1 minute"
    assert duration_words(45 * 60) == "about 45 minutes"
    assert duration_words(2 * 3600) == "about 2 hours"
    assert duration_words(2 * 3600 + 600) == "about 2 hours 10 minutes"


def test_progress_says_each_phase_and_estimates_only_from_imports_done() -> None:
    waiting = progress_of(
        state(
            "waiting", contacts_total=4_000, contacts_done=1_000, chunks_total=4, chunks_uploaded=4
        ),
        NOW,
    )
    assert waiting.time_left == "about 30 minutes"  # 1,000 in 10 min: 3,000 more take 30
    assert (waiting.prepared, waiting.imported, waiting.percent) == (4_000, 1_000, 25)
    assert waiting.phase_text == "Waiting for Constant Contact to finish the imports"
    first = progress_of(state("uploading", contacts_total=4_000, chunks_total=4), NOW)
    assert first.time_left.startswith("not known yet: it is estimated once")
    assert progress_of(state("preparing"), NOW).time_left.startswith("not known yet")
    # A run that continued as new is a new Durable generation: its start is its own.
    continued = state("waiting", minutes_ago=1, contacts_total=4_000, contacts_done=1_000)
    carried = RunState(
        "Running",
        {**continued.custom_status, "started_at": "2026-11-28T09:50:00Z"},
        continued.created_time,
    )
    assert progress_of(continued, NOW).time_left == "about 3 minutes"
    assert progress_of(carried, NOW).time_left == "about 30 minutes"
    assert progress_of(state("finishing", contacts_total=9), NOW).time_left == "less than a minute"
    assert progress_of(state("uploading"), NOW).time_left == "none: nothing to send"
    pending = RunState("Pending", {}, NOW)
    assert progress_of(pending, NOW).phase_text == "Waiting to start"
    answer = progress_json(
        state(
            "uploading",
            contacts_total=4_000,
            contacts_done=0,
            chunks_total=4,
            chunks_uploaded=1,
            contacts_sent=1_000,
        ),
        NOW,
    )
    assert answer == {
        "ended": False,
        "status": "running",
        "title": "Sending the contacts to Constant Contact",
        "percent": 0,
        "fields": {
            "phase": "Sending the contacts to Constant Contact",
            "prepared": "4,000",
            "sent": "1,000 of 4,000 (1 of 4 request bodies)",
            "imported": "0 of 4,000",
            "left": "not known yet: it is estimated once Constant Contact has finished a "
            "first import",
        },
    }


def test_a_status_is_said_from_the_report_then_the_output_then_the_progress() -> None:
    done = RunState("Completed", {"phase": "done", "status": "completed"}, NOW)
    assert verdict(done).title == "Completed"
    assert verdict(done, {"status": "needs_confirmation"}).key == "needs_confirmation"
    assert verdict(RunState("Pending", {}, NOW)).key == "pending"
    assert verdict(RunState(None, {}, NOW)).key == "unknown"
    broke = verdict(RunState("Failed", {"phase": "uploading"}, NOW))
    assert (broke.key, broke.title) == ("failed", "Broke off")
    assert "Failed" in broke.detail


def report(**extra: Any) -> dict[str, Any]:
    return {
        "run_id": "high-value." + "a" * 32,
        "status": "completed_with_errors",
        "source": "az://inbox/BlobExport/HighValue/2026/11/28/0930 (2 parts)",
        "trigger": "http",
        "requested_at": "2026-11-28T09:45:00Z",
        "started_at": "2026-11-28T09:45:01Z",
        "finished_at": "2026-11-28T09:50:00Z",
        "error": None,
        "connection": "acme",
        "counts": {
            "rows_read": 600,
            "contacts": 580,
            "duplicates": 8,
            "rejected": 12,
            "contacts_delivered": 540,
            "contacts_not_delivered": 40,
            "contacts_unconfirmed": 0,
            "contacts_unchanged": 0,
            "person_count": 540,
            "cannot_add_to_list": 3,
        },
        "chunks": {"total": 2, "fewest_possible": 2, "imported": 1, "import_failed": 1},
        "chunk_outcomes": [
            {
                "name": "chunks/chunk-00001.json",
                "contacts": 540,
                "fate": "imported",
                "shortfall": 0,
                "error": None,
            },
            {
                "name": "chunks/chunk-00002.json",
                "contacts": 40,
                "fate": "import_failed",
                "shortfall": 0,
                "error": "the import ended failed",
            },
        ],
        "not_delivered": {
            "contacts": 40,
            "kept_in": "az://staging/x",
            "how_to_resend": "start the run again",
        },
        "rejects": {"reasons": {"invalid_email": 10, "ragged_row": 2}, "file": "az://r/x.csv"},
        "requests": {"import_requests": 2, "status_polls": 3, "poll_requests": 3},
        "changes": {"mode": "add", "removed": 0},
        "quota": None,
        "removals": None,
        **extra,
    }


def test_the_report_shows_the_issues_numbers_and_what_did_not_go() -> None:
    view = report_view(report())
    facts = {fact.label: fact.value for fact in view.facts}
    assert facts["Rows read"] == "600"
    assert facts["Delivered"] == "540"
    assert facts["Duplicates"] == "8"
    assert facts["Rejected"] == "12"
    assert facts["Unchanged"] == "0"
    assert facts["Removed"] == "0"
    assert facts["Not delivered"] == "40"
    assert facts["Requests used"] == (
        "2 import requests for 2 request bodies (fewest possible 2); 3 status polls in 3 requests"
    )
    assert [(r.code, r.count) for r in view.reasons] == [
        ("invalid_email", 10),
        ("ragged_row", 2),
        ("duplicate", 8),  # not rejected, but left out: last
    ]
    assert view.rows_left_out == 20
    said = "\n".join(view.not_gone)
    assert "chunk-00002.json (40 contacts): Constant Contact's import failed" in said
    assert "40 contacts did not go; their request bodies are kept in az://staging/x" in said
    assert "3 people were not added to the lists" in said
    assert "20 rows left out (12 rejected, 8 duplicates)" in said
    assert "chunk-00001" not in said
    assert (
        report_view(
            report(
                status="completed",
                chunk_outcomes=[],
                not_delivered={},
                counts={"rows_read": 5, "contacts_delivered": 5},
            )
        ).not_gone
        == ()
    )


def test_a_run_waiting_for_confirmation_shows_its_removals_per_list() -> None:
    waiting = report(
        status="needs_confirmation",
        removals={
            "lists": [{"list_id": "L1", "members": 200, "remove": 100, "kept_for_others": 4}],
            "planned": 100,
            "needs_confirmation": "this mirror run would remove 100 of the 200 members",
        },
    )
    shown = confirmation_of(waiting, {"L1": "Newsletter"})
    assert shown is not None
    assert shown.why.startswith("this mirror run would remove 100")
    [line] = shown.lists
    assert (line.name, line.members, line.remove, line.share, line.kept_for_others) == (
        "Newsletter",
        200,
        100,
        "50.0%",
        4,
    )
    assert confirmation_of(waiting) is not None
    assert confirmation_of(waiting).lists[0].name == "L1"  # type: ignore[union-attr]
    assert confirmation_of(report()) is None
    said = "\n".join(report_view(waiting).not_gone)
    assert "Nothing was sent or removed: the run waits for its removals to be confirmed" in said
    assert "chunk" not in said


# --- the rejects search --------------------------------------------------------------------


def rejects_csv(count: int) -> bytes:
    text = io.StringIO()
    writer = RejectsWriter(text)
    for n in range(1, count + 1):
        reason = "invalid_email" if n % 2 else "duplicate"
        email = f"Person.{n}@Example.com" if reason == "duplicate" else f"not-an-email-{n}"
        writer.write(
            row=n,
            file="/inbox/Export/T/2026/11/28/0930/T_1.csv",
            line=n + 1,
            email=email,
            reason=reason,
            detail="" if n % 2 else "same email as row 1",
        )
    writer.write(row=999, file="T_2.csv", line=5, email="=HYPERLINK(x)", reason="invalid_email")
    return text.getvalue().encode()


def test_a_search_finds_an_address_in_any_case_or_a_reason_and_stops_at_its_limit() -> None:
    rows = list(rejects_of(csv_rows([rejects_csv(300)])))
    assert len(rows) == 301
    found = search(rows, Query.of("  person.12@example.COM ", ""))
    assert [(m.row, m.line, m.reason) for m in found.matches] == [("12", "13", "duplicate")]
    assert found.matches[0].file_name == "T_1.csv"
    assert not found.more
    by_reason = search(rows, Query.of("", "invalid_email"))
    assert len(by_reason.matches) == MAX_MATCHES
    assert by_reason.more
    both = search(rows, Query.of("email-3", "invalid_email"))
    assert [m.row for m in both.matches] == ["3", "31", "33", "35", "37", "39"]
    guarded = search(rows, Query.of("=hyperlink", ""))
    assert [m.email for m in guarded.matches] == ["=HYPERLINK(x)"]  # the guard is taken off
    assert search(rows, Query.of("nobody@example.com", "")).matches == ()


def test_a_search_needs_something_to_look_for_and_a_known_reason() -> None:
    for email, reason in (("", ""), ("  ", ""), ("x" * 300, ""), ("", "no_such_reason")):
        with pytest.raises(InputError):
            Query.of(email, reason)
    with pytest.raises(InputError, match="not a rejects file"):
        list(rejects_of(csv_rows([b"a,b\r\n1,2\r\n"])))


def test_the_file_is_read_as_it_comes_in_pieces_split_anywhere() -> None:
    whole = rejects_csv(40).replace(b"not-an-email-7", "nöt-än-émail-7".encode())
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]  # splits letters and lines
    assert list(csv_rows(pieces)) == list(csv.reader(io.StringIO(whole.decode(), newline="")))
    found = search_file(pieces, Query.of("émail-7", ""))
    assert [m.row for m in found.matches] == ["7"]
    with pytest.raises(InputError, match="could not be read"):
        search_file([b"\xff\xfe"], Query.of("x", ""))


def test_the_local_run_store_hands_out_a_published_rejects_file_in_pieces(
    tmp_path: Path,
) -> None:
    store = LocalRunStore(tmp_path / "runs")
    run_id = "high-value." + "b" * 32
    assert store.read_rejects(run_id) is None
    whole = rejects_csv(5000)
    (tmp_path / "runs" / run_id).mkdir(parents=True)
    (tmp_path / "runs" / run_id / "rejects.csv").write_bytes(whole)
    pieces = store.read_rejects(run_id)
    assert pieces is not None
    assert b"".join(pieces) == whole
    found = search_run(store, run_id, Query.of("person.4998@", ""))
    assert found is not None
    assert [m.row for m in found.matches] == ["4998"]
    assert search_run(store, "high-value." + "c" * 32, Query.of("x", "")) is None


def test_a_runs_source_becomes_its_folder_in_the_inbox(tmp_path: Path) -> None:
    inbox = FolderInbox(tmp_path)
    assert inbox_path(str(tmp_path / "Export/T/2026/11/28/0930"), inbox) == (
        "Export/T/2026/11/28/0930"
    )
    assert inbox_path(str(tmp_path.parent / "elsewhere"), inbox) is None
    assert inbox_path("Export/T/2026/11/28/0930", inbox) is None
    assert inbox_path(str(tmp_path / ".." / "x"), inbox) is None


# --- the pages, over Azurite and the Durable fake ------------------------------------------------


async def visit(
    handler: Any,
    method: str,
    route: str,
    run_id: str,
    durable: DurableFake | None = None,
    *,
    headers: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> func.HttpResponse:
    """A console page's function, called as the host calls it (a signed-in caller)."""
    sent = dict(headers or ADMIN)
    body = None
    if form is not None:
        token = safety.new_form_token()
        sent |= {"Cookie": f"{safety.FORM_COOKIE}={token}", "Sec-Fetch-Site": "same-origin"}
        body = urlencode({**form, safety.FORM_FIELD: token}).encode()
    req = http_request(
        method, f"console/{route}", route_params={"run_id": run_id}, headers=sent, body=body
    )
    user = handler.build().get_user_function()
    if durable is not None:
        answer: func.HttpResponse = await user.client_function(req=req, client=durable.client())
    else:
        answer = await user(req=req)
    return answer


async def finished_run(
    app_env: AppEnv, durable_fake: DurableFake, run_report: dict[str, Any], rejects: bytes
) -> str:
    """An export of connection acme (role marketing) with one run, ended with this
    report and rejects file."""
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    await mark_connected(app_env)
    app_env.write(f"{RUN}/HighValue_1.csv", b"id1,a@example.com\n")
    app_env.write_later(f"{EXPORT}/model.json")
    saved = await call(http_api.export_item, "PUT", "exports/high-value", body=DEFINITION)
    started = await call(
        http_api.export_runs, "POST", "exports/high-value/runs", durable=durable_fake
    )
    assert (saved.status_code, started.status_code) == (201, 202)
    run_id = str(response_json(started)["id"])
    store = BlobRunStore(app_env.service, reports=app_env.reports, staging=app_env.staging)
    store.write_report(run_id, {**run_report, "run_id": run_id})
    app_env.container(app_env.reports).upload_blob(f"{run_id}/rejects.csv", rejects)
    status = {"phase": "done", "status": run_report["status"], "contacts_total": 580}
    durable_fake.set_status(run_id, "Completed", custom_status=status)
    return run_id


def text(answer: func.HttpResponse) -> str:
    return answer.get_body().decode()


@pytest.mark.azurite
async def test_a_connection_user_reads_the_run_and_its_rejects_and_no_one_else(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    run_id = await finished_run(app_env, durable_fake, report(), rejects_csv(30))
    page = await visit(
        pages.console_run, "GET", f"runs/{run_id}", run_id, durable_fake, headers=MARKETING
    )
    assert page.status_code == 200
    shown = text(page)
    for words in (
        "Completed with errors",
        "Rows read",
        "600",
        "invalid_email",
        "Download rejects",
        "What did not go, and why",
        "Search rejects",
    ):
        assert words in shown, words
    assert "@" not in shown  # the page holds no address: the rejects file does
    assert "Person." not in shown

    download = await visit(
        pages.console_run_rejects_file,
        "GET",
        f"runs/{run_id}/rejects.csv",
        run_id,
        headers=MARKETING,
    )
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert download.headers["Content-Disposition"] == (
        f'attachment; filename="{run_id}-rejects.csv"'
    )
    assert download.headers["Cache-Control"] == "no-store"
    assert download.get_body() == rejects_csv(30)

    async def search(email: str, reason: str) -> Any:
        return await visit(
            pages.console_run_rejects,
            "POST",
            f"runs/{run_id}/rejects",
            run_id,
            headers=MARKETING,
            form={"email": email, "reason": reason},
        )

    found = await search("PERSON.4@example.com", "")
    assert found.status_code == 200
    assert "Person.4@Example.com" in text(found)
    assert "1 match." in text(found)
    several = await search("", "duplicate")
    assert "15 matches." in text(several)
    empty = await search("", "")
    assert empty.status_code == 400
    assert "Type an email address or choose a reason" in text(empty)

    progress = await visit(
        pages.console_run_progress,
        "GET",
        f"runs/{run_id}/progress",
        run_id,
        durable_fake,
        headers=MARKETING,
    )
    assert progress.headers["Content-Security-Policy"] == safety.CONTENT_SECURITY_POLICY
    answer = response_json(progress)
    assert answer["ended"] is True
    assert set(answer) == {"ended", "status", "title", "percent", "fields"}

    for handler, route, durable in (
        (pages.console_run, f"runs/{run_id}", durable_fake),
        (pages.console_run_progress, f"runs/{run_id}/progress", durable_fake),
        (pages.console_run_rejects_file, f"runs/{run_id}/rejects.csv", None),
        (pages.console_run_rejects, f"runs/{run_id}/rejects", None),
    ):
        refused = await visit(handler, "GET", route, run_id, durable, headers=SALES)
        assert refused.status_code == 403, route
        assert "your roles do not allow its connection" in text(refused)
        assert 'href="/api/console/runs">Runs you may see</a>' in text(refused)
        assert "@" not in text(refused)
    searched = await visit(
        pages.console_run_rejects,
        "POST",
        f"runs/{run_id}/rejects",
        run_id,
        headers=SALES,
        form={"email": "person", "reason": ""},
    )
    assert searched.status_code == 403
    assert "Person" not in text(searched)
    listed = await visit(pages.console_runs, "GET", "runs", "", durable_fake, headers=SALES)
    assert listed.status_code == 200
    assert run_id not in text(listed)
    assert "No runs" in text(listed)
    mine = await visit(pages.console_runs, "GET", "runs", "", durable_fake, headers=MARKETING)
    assert f"runs/{run_id}" in text(mine)
    assert "Completed with errors" in text(mine)


@pytest.mark.azurite
async def test_confirm_removals_starts_the_run_again_only_while_it_waits(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    waiting = report(
        status="needs_confirmation",
        removals={
            "lists": [{"list_id": "L1", "members": 10, "remove": 5}],
            "planned": 5,
            "needs_confirmation": "this mirror run would remove 5 of the 10 members",
        },
    )
    run_id = await finished_run(app_env, durable_fake, waiting, rejects_csv(0))
    shown = await visit(pages.console_run, "GET", f"runs/{run_id}", run_id, durable_fake)
    assert "Removals waiting for confirmation" in text(shown)
    assert "Confirm removals" in text(shown)
    assert "No row was left out." not in text(shown)  # the report still counts 20

    stranger = await visit(
        pages.console_run_confirm,
        "POST",
        f"runs/{run_id}/confirm",
        run_id,
        durable_fake,
        headers=SALES,
        form={},
    )
    assert stranger.status_code == 403
    assert len(durable_fake.starts) == 1
    forged = await visit(
        pages.console_run_confirm,
        "POST",
        f"runs/{run_id}/confirm",
        run_id,
        durable_fake,
        headers={**MARKETING, "Sec-Fetch-Site": "cross-site"},
    )
    assert forged.status_code == 403
    assert len(durable_fake.starts) == 1

    # A connection that may not send now: the refusal in words, and the page that fixes it.
    etag = (await call(http_api.connection_item, "GET", "connections/acme")).headers["ETag"]
    withdrawn = await put_connection(consent(False), headers={"If-Match": etag})
    assert withdrawn.status_code == 200
    not_now = await visit(
        pages.console_run_confirm,
        "POST",
        f"runs/{run_id}/confirm",
        run_id,
        durable_fake,
        headers=MARKETING,
        form={},
    )
    assert not_now.status_code == 409
    assert "data-privacy consent has not been accepted" in text(not_now)
    assert 'href="/api/console/connections/acme">Open connection acme</a>' in text(not_now)
    assert len(durable_fake.starts) == 1
    accepted = await put_connection(consent(), headers={"If-Match": withdrawn.headers["ETag"]})
    assert accepted.status_code == 200

    confirmed = await visit(
        pages.console_run_confirm,
        "POST",
        f"runs/{run_id}/confirm",
        run_id,
        durable_fake,
        headers=MARKETING,
        form={},
    )
    assert confirmed.status_code == 303
    assert confirmed.headers["Location"] == f"/api/console/runs/{run_id}"
    assert len(durable_fake.starts) == 2
    again = RunInput.from_json(durable_fake.starts[-1].input)
    assert (again.run_id, again.options.confirm_removals) == (run_id, True)

    store = BlobRunStore(app_env.service, reports=app_env.reports, staging=app_env.staging)
    store.write_report(run_id, {**report(), "run_id": run_id})
    durable_fake.set_status(run_id, "Completed")
    not_waiting = await visit(
        pages.console_run_confirm, "POST", f"runs/{run_id}/confirm", run_id, durable_fake, form={}
    )
    assert not_waiting.status_code == 400
    assert "is not waiting for confirmation (it ended completed with errors)" in text(not_waiting)
    assert len(durable_fake.starts) == 2


@pytest.mark.azurite
async def test_a_run_id_that_is_no_run_is_not_found(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    for raw in ("high-value." + "0" * 32, "Not A Run", "x" * 200):
        answer = await visit(pages.console_run, "GET", f"runs/{raw}", raw, durable_fake)
        assert answer.status_code in (403, 404), raw  # 403: an export no one may read
        assert "Traceback" not in text(answer)


def test_contacts_an_earlier_run_did_not_deliver_are_said_to_be_sent_again() -> None:
    earlier = "high-value.0123456789abcdef0123456789abcdef"
    changes = {"mode": "add", "retried": {"contacts": 40, "from_run": earlier}}
    facts = {f.label: f for f in report_view(report(changes=changes)).facts}
    assert facts["Sent again"].value == "40"
    assert facts["Sent again"].hint == f"not delivered by run {earlier}"
    assert "Sent again" not in {f.label for f in report_view(report()).facts}
