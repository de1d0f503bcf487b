"""The console's runs pages in a real browser, through ``ccexport serve`` against the
Constant Contact sandbox: a run followed live to its report, its rejects downloaded
and searched, a mirror run's removals confirmed, the page without JavaScript, and a
contributor of another role kept out.

One serve (an admin) is shared by the module: its connection is connected through
the sandbox's OAuth and its exports saved through serve's HTTP API, as a person's
script would, so these tests do not depend on the console's connections or exports
pages. Runs start through the HTTP API too; the console shows them.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    APIRequestContext,
    Browser,
    Page,
    Playwright,
    expect,
)

from bench.sample import EXPORT, RUN, TABLE, SampleCounts, write_sample
from tests.browser.conftest import axe_violations, console_url
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.serve_service import RunningServe, running_serve
from tests.support.services import ServiceError

ROWS = 600
LATER_ROWS = 300
"""The later segment: the first half of the first. A mirror run of it would take half of
its list's members off, past the 20 % a definition allows by default."""
FIRST_RUN = f"{EXPORT}/{TABLE}/{RUN}"
LATER_RUN = f"{EXPORT}/{TABLE}/2026/11/29/0930"
CONNECTION = "crm"
RUN_TIMEOUT = 90.0


@dataclass
class World:
    """One serve with a connected connection, an add export and a mirror export."""

    serve: RunningServe
    api: APIRequestContext
    sandbox: RunningSandbox
    counts: SampleCounts
    later: SampleCounts
    add_list: str
    mirror_list: str
    mirror_list_name: str
    mirror_first_run: str
    home: Path

    @property
    def console(self) -> str:
        return console_url(self.serve)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        answer = self.api.fetch(f"{self.serve.api}/{path}", method=method, data=body)
        raw = answer.body()
        return answer.status, (answer.json() if raw else None)

    def start(self, export: str, folder: str) -> str:
        status, started = self.call("POST", f"exports/{export}/runs", {"folder": folder})
        assert status == 202, started
        return str(started["id"])

    def wait_for(self, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            status, run = self.call("GET", f"runs/{run_id}")
            assert status == 200, run
            if run["runtime_status"] in {"Completed", "Failed", "Terminated"}:
                return dict(run)
            time.sleep(0.3)
        raise AssertionError(f"run {run_id} did not end in {RUN_TIMEOUT:.0f}s")


def copy_runs(samples: dict[str, Path], inbox: Path) -> None:
    """Each sample's parts as its run folder in the inbox, then model.json, strictly
    later, as Customer Insights writes them."""
    for folder, root in samples.items():
        target = inbox / folder
        target.mkdir(parents=True)
        for part in sorted((root / FIRST_RUN).iterdir()):
            shutil.copyfile(part, target / part.name)
    time.sleep(1.05)
    first = next(iter(samples.values()))
    shutil.copyfile(first / EXPORT / "model.json", inbox / EXPORT / "model.json")


def definition(list_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "connection": CONNECTION,
        "list_ids": [list_id],
        "mapping": {"email": "PrimaryEmail", "first_name": "FirstName"},
        "segments": [{"export": EXPORT, "table": TABLE}],
        **extra,
    }


@pytest.fixture(scope="module")
def world(
    sandbox: RunningSandbox, playwright: Playwright, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """serve as an admin over an inbox holding two run folders; connection ``crm``
    (role marketing) connected; export ``high-value`` (add) and ``mirror-list``
    (mirror); the mirror export's first run started (it ends while the first test runs)."""
    where = tmp_path_factory.mktemp("console-runs")
    counts = write_sample(where / "first", ROWS, bad_every=50, duplicate_every=0)
    later = write_sample(where / "later", LATER_ROWS, bad_every=50, duplicate_every=0)
    inbox = where / "inbox"
    copy_runs({FIRST_RUN: where / "first", LATER_RUN: where / "later"}, inbox)
    home = where / "home"
    env = cli_env(sandbox, home, RUN_QUIET_SECONDS="0")
    api = playwright.request.new_context()
    try:
        with running_serve(
            env, "--inbox", str(inbox), "--no-timer", "--role", "admin", log=where / "serve.log"
        ) as serve:
            add_list = sandbox.create_list(f"Console add {uuid.uuid4().hex[:6]}")
            mirror_name = f"Console mirror {uuid.uuid4().hex[:6]}"
            mirror_list = sandbox.create_list(mirror_name)
            made = World(serve, api, sandbox, counts, later, add_list, mirror_list, mirror_name,
                          "", home)  # fmt: skip
            roles = {"display_name": "CRM", "roles": ["marketing"]}
            status, _ = made.call(
                "PUT", f"connections/{CONNECTION}", {**roles, "privacy_consent": {"accepted": True}}
            )
            assert status == 201
            connected = api.get(f"{serve.api}/connections/{CONNECTION}/connect")
            assert connected.status == 200, connected.text()
            for name, body in (
                ("high-value", definition(add_list)),
                ("mirror-list", definition(mirror_list, mode="mirror")),
            ):
                status, saved = made.call("PUT", f"exports/{name}", body)
                assert status == 201, saved
            made.mirror_first_run = made.start("mirror-list", FIRST_RUN)
            yield made
    except ServiceError as exc:
        pytest.fail(str(exc))
    finally:
        api.dispose()


def fact(page: Page, section: str, label: str) -> str:
    """The value of a fact (``<dt>label</dt><dd>value</dd>``) in a list of facts."""
    return (
        page.locator(f"{section} dt", has_text=label)
        .first.locator("xpath=following-sibling::dd[1]")
        .inner_text()
    )


def shot(page: Page, where: Path, name: str) -> None:
    page.screenshot(path=where / f"{name}.png", full_page=True)


def test_a_run_is_followed_live_to_its_report_and_its_rejects_are_downloaded_and_searched(
    world: World, page: Page, browser: Browser, tmp_path: Path
) -> None:
    run_id = world.start("high-value", FIRST_RUN)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.goto(f"{world.console}runs/{run_id}")
    expect(page).to_have_title("Run of high-value · ccexport")
    live = page.locator("#live")
    expect(live).to_be_visible()  # the run waits at least one poll interval (10 s)
    expect(page.get_by_role("heading", name="Progress")).to_be_visible()
    for label in ("Phase", "Contacts prepared", "Sent", "Imported", "Time left (estimate)"):
        expect(live.locator("dt", has_text=label)).to_be_visible()
    assert axe_violations(page) == []
    shot(page, tmp_path, "run-progress")

    # Without JavaScript, the same page shows where the run is, and a Refresh link.
    quiet = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    plain = quiet.new_page()
    plain.goto(f"{world.console}runs/{run_id}")
    expect(plain.locator("#run-status")).not_to_be_empty()
    expect(plain.get_by_role("link", name="Refresh")).to_be_visible()
    shot(plain, tmp_path, "run-progress-no-javascript")

    # The script follows the run: the counts fill in, then the report replaces the
    # progress, with no navigation.
    expect(live.locator('[data-field="prepared"]')).to_have_text(
        f"{world.counts.contacts:,}", timeout=30_000
    )
    expect(live.locator('[data-field="imported"]')).to_have_text(
        f"0 of {world.counts.contacts:,}"
    )  # Constant Contact finishes an import only after the first poll (10 s)
    shot(page, tmp_path, "run-progress-sending")
    page.wait_for_selector("body[data-run='ended']", timeout=RUN_TIMEOUT * 1000)
    assert navigations == [f"{world.console}runs/{run_id}"]
    expect(page.locator("#live")).to_have_count(0)
    expect(page.locator("#run-status")).to_have_text("Completed: every contact was delivered.")
    expect(page.get_by_role("heading", name="Report")).to_be_visible()
    counts = world.counts
    assert fact(page, ".report-facts", "Rows read") == f"{counts.rows:,}"
    assert fact(page, ".report-facts", "Delivered").startswith(f"{counts.contacts:,} (in 1 of 1")
    assert fact(page, ".report-facts", "Duplicates").startswith("0")
    assert fact(page, ".report-facts", "Rejected").startswith(f"{counts.bad:,}")
    assert fact(page, ".report-facts", "Unchanged").startswith("0")
    assert fact(page, ".report-facts", "Removed").startswith("0")
    assert fact(page, ".report-facts", "Requests used").startswith("1 import request for 1")
    reasons = page.locator("table.reasons tbody tr")
    expect(reasons).to_have_count(1)
    expect(reasons.first.locator("td")).to_have_text(
        ["invalid_email", f"{counts.bad}", "not an email address"]
    )
    expect(page.locator(".not-gone li")).to_have_text(
        [f"{counts.bad} rows left out ({counts.bad} rejected, 0 duplicates): they are in the "
         "rejects file"]
    )  # fmt: skip
    assert len(world.sandbox.members(world.add_list)) == counts.contacts
    assert axe_violations(page) == []
    shot(page, tmp_path, "run-report")
    plain.reload()
    expect(plain.get_by_role("heading", name="Report")).to_be_visible()
    expect(plain.locator("#run-status")).to_have_text("Completed: every contact was delivered.")
    shot(plain, tmp_path, "run-report-no-javascript")
    plain.get_by_label("Reason", exact=True).select_option("invalid_email")
    plain.get_by_role("button", name="Search rejects").click()  # a plain form: no script
    expect(plain.locator("#matches-count")).to_have_text(f"{world.counts.bad} matches.")
    quiet.close()

    # Download rejects: the rows left out, each with its reason.
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download rejects").click()
    download = downloading.value
    assert download.suggested_filename == f"{run_id}-rejects.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert len(rows) == counts.bad
    assert {r["reason"] for r in rows} == {"invalid_email"}
    assert [r["email"] for r in rows] == [f"not-an-email-{n}" for n in range(50, ROWS + 1, 50)]

    # The search: by one row's address, then by reason; the address never in a URL.
    wanted = rows[3]
    page.get_by_label("Email address").fill(wanted["email"].upper())
    page.get_by_role("button", name="Search rejects").click()
    expect(page.locator("#matches-count")).to_have_text("1 match.")
    assert wanted["email"].casefold() not in page.url.casefold()
    found = page.locator("table.matches tbody tr")
    expect(found).to_have_count(1)
    cells = found.first.locator("td")
    expect(cells).to_have_text(
        [
            wanted["row"],
            wanted["line"],
            "invalid_email",
            wanted["email"],
            "HighValueSegment_1.csv",
            "",
        ]
    )
    assert axe_violations(page) == []
    shot(page, tmp_path, "rejects-by-address")
    page.get_by_label("Email address").fill("")
    page.get_by_label("Reason", exact=True).select_option("invalid_email")
    page.get_by_role("button", name="Search rejects").click()
    expect(page.locator("#matches-count")).to_have_text(f"{counts.bad} matches.")
    expect(page.locator("table.matches tbody tr")).to_have_count(counts.bad)
    shot(page, tmp_path, "rejects-by-reason")

    # The history: every run, then one export's.
    page.goto(f"{world.console}runs")
    line = page.locator("table.runs tbody tr", has_text="high-value")
    expect(line).to_have_count(1)
    expect(line.locator("td").nth(1)).to_have_text("high-value")
    expect(line.locator("td").nth(2)).to_have_text("a person")
    expect(line.locator("td").nth(3)).to_have_text("Completed")
    expect(page.locator("table.runs tbody tr", has_text="mirror-list")).to_have_count(1)
    page.get_by_label("Export").select_option("high-value")
    page.get_by_role("button", name="Show runs").click()
    expect(page).to_have_title("Runs of high-value · ccexport")
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    assert axe_violations(page) == []
    shot(page, tmp_path, "runs-of-one-export")
    line_link = page.locator("table.runs tbody tr a").first
    line_link.click()
    expect(page).to_have_url(f"{world.console}runs/{run_id}")

    # A phone's width.
    page.set_viewport_size({"width": 390, "height": 844})
    for path in (f"runs/{run_id}", "runs"):
        page.goto(f"{world.console}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        assert axe_violations(page) == []
    shot(page, tmp_path, "runs-phone")
    page.goto(f"{world.console}runs/{run_id}/rejects")
    page.get_by_label("Reason", exact=True).select_option("invalid_email")
    page.get_by_role("button", name="Search rejects").click()
    expect(page.locator("#matches-count")).to_have_text(f"{counts.bad} matches.")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert axe_violations(page) == []
    shot(page, tmp_path, "rejects-phone")


def test_a_mirror_run_waiting_for_confirmation_shows_its_removals_and_goes_ahead_when_confirmed(
    world: World, page: Page, tmp_path: Path
) -> None:
    first = world.wait_for(world.mirror_first_run)
    assert first["report"]["status"] == "completed"
    assert len(world.sandbox.members(world.mirror_list)) == world.counts.contacts
    run_id = world.start("mirror-list", LATER_RUN)
    stopped = world.wait_for(run_id)
    assert stopped["report"]["status"] == "needs_confirmation"

    page.goto(f"{world.console}runs/{run_id}")
    expect(page.locator("#run-status")).to_contain_text("Waiting for confirmation")
    expect(page.get_by_role("heading", name="Removals waiting for confirmation")).to_be_visible()
    leaving = world.counts.contacts - world.later.contacts
    line = page.locator("section", has_text="Removals waiting").locator("tbody tr")
    expect(line).to_have_count(1)
    expect(line.locator("td")).to_have_text(
        [world.mirror_list_name, f"{world.counts.contacts}", f"{leaving}",
         f"{leaving / world.counts.contacts:.1%}", "0"]
    )  # fmt: skip
    assert axe_violations(page) == []
    shot(page, tmp_path, "removals-to-confirm")

    page.get_by_role("button", name="Confirm removals").click()
    expect(page).to_have_url(f"{world.console}runs/{run_id}")  # post, redirect, get
    page.wait_for_selector("body[data-run='ended']", timeout=RUN_TIMEOUT * 1000)
    expect(page.locator("#run-status")).to_have_text("Completed: every contact was delivered.")
    assert fact(page, ".report-facts", "Removed").startswith(f"{leaving:,}")
    assert fact(page, ".report-facts", "Unchanged").startswith(f"{world.later.contacts:,}")
    members = world.sandbox.members(world.mirror_list)
    assert len(members) == world.later.contacts
    assert axe_violations(page) == []
    shot(page, tmp_path, "removals-confirmed")


def test_a_contributor_of_another_role_sees_no_run_and_gets_none_of_its_rejects(
    world: World, browser: Browser, tmp_path: Path
) -> None:
    run_id = world.mirror_first_run
    world.wait_for(run_id)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = cli_env(world.sandbox, world.home, RUN_QUIET_SECONDS="0")
    try:
        with running_serve(
            env, "--inbox", str(inbox), "--no-timer", "--role", "sales", "--user", "ana",
            log=tmp_path / "serve.log",
        ) as serve:  # fmt: skip
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            console = console_url(serve)
            page.goto(f"{console}runs")
            expect(page.get_by_text("No runs that you may see yet.")).to_be_visible()
            expect(page.locator("table.runs")).to_have_count(0)
            shot(page, tmp_path, "contributor-runs")

            answer = page.goto(f"{console}runs/{run_id}")
            assert answer is not None
            assert answer.status == 403
            expect(page.get_by_role("heading", name="You may not do this")).to_be_visible()
            expect(page.get_by_role("alert")).to_contain_text(
                "your roles do not allow its connection 'crm'"
            )
            expect(page.get_by_role("link", name="Runs you may see")).to_have_attribute(
                "href", "/api/console/runs"
            )
            expect(page.get_by_role("button", name="Confirm removals")).to_have_count(0)
            expect(page.get_by_role("link", name="Download rejects")).to_have_count(0)
            assert "@" not in page.content()
            assert axe_violations(page) == []
            shot(page, tmp_path, "contributor-refused")

            token = next(c["value"] for c in context.cookies() if c["name"] == "ccexport_form")
            refused = [
                page.request.get(f"{console}runs/{run_id}/rejects.csv"),
                page.request.get(f"{console}runs/{run_id}/progress"),
                page.request.post(f"{console}runs/{run_id}/rejects",
                                  form={"form_token": token, "email": "example", "reason": ""}),
                page.request.post(f"{console}runs/{run_id}/confirm", form={"form_token": token}),
            ]  # fmt: skip
            for answer_ in refused:
                assert answer_.status == 403, answer_.url
                assert "@" not in answer_.text()
                assert answer_.headers["content-type"].startswith("text/html")
            context.close()
    except ServiceError as exc:
        pytest.fail(str(exc))
    run = world.wait_for(run_id)
    assert run["report"]["status"] == "completed"  # nothing was started again
