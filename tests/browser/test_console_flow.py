"""A new user's first hour, in the console only: the seed's whole flow in Chromium
through ``ccexport serve`` and the Constant Contact sandbox, never the HTTP API.

Add a connection (display name, who can use it, I agree), Connect it (the sandbox's
OAuth), add an export (a list chosen by name, Email / First name / Last name from
model.json's columns, the segment the inbox holds), Save, Run now, and follow the run
to its report; the sandbox's list then holds the segment's people.

``make screenshots`` runs this test with ``CCEXPORT_SCREENSHOTS=docs/images``: its
pages are the README's pictures.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from playwright.sync_api import Page, expect

from bench.sample import EXPORT, TABLE, write_sample
from shared.console.export_editing import SAVED
from tests.browser.conftest import axe_violations, console_url
from tests.support.sandbox_service import RunningSandbox
from tests.support.serve_service import RunningServe

SCREENSHOTS = "CCEXPORT_SCREENSHOTS"
ROWS = 500


def picture(page: Page, where: Path, name: str) -> None:
    """The page as a person sees it: checked by axe, and kept (and copied to
    ``CCEXPORT_SCREENSHOTS`` when it is set, for the README)."""
    assert axe_violations(page) == [], name
    path = where / f"console-{name}.png"
    page.screenshot(path=path, full_page=True)
    wanted = os.environ.get(SCREENSHOTS)
    if wanted:
        shutil.copyfile(path, Path(wanted) / path.name)


def test_a_new_user_connects_defines_runs_and_reads_the_report_in_the_console(
    console: RunningServe, page: Page, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    counts = write_sample(tmp_path / "inbox", ROWS, bad_every=25, duplicate_every=0)
    newsletter = f"Newsletter {uuid.uuid4().hex[:6]}"
    list_id = sandbox.create_list(newsletter)
    base = console_url(console)

    page.goto(base)
    expect(page.get_by_text("No exports yet.")).to_be_visible()
    page.get_by_role("navigation").get_by_role("link", name="Connections").click()
    page.get_by_role("link", name="Add connection").click()
    page.get_by_label("Connection name").fill("marketing")
    page.get_by_label("Display name").fill("Constant Contact (marketing)")
    page.get_by_label("contributor").check()
    page.get_by_label("I agree").check()
    picture(page, tmp_path, "connection")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("button", name="Connect", exact=True).click()
    page.get_by_role("link", name="Continue to Constant Contact").click()
    expect(
        page.get_by_text("Connected: the Constant Contact account is connected.")
    ).to_be_visible()
    picture(page, tmp_path, "connected")

    page.get_by_role("navigation").get_by_role("link", name="Exports").click()
    page.get_by_role("link", name="Add export").click()
    page.get_by_label("Export name").fill("high-value")
    page.get_by_role("button", name="Update lists and columns").click()
    page.get_by_label(newsletter).check()
    page.get_by_label(f"{EXPORT} / {TABLE}").check()
    page.get_by_label("Email (required)").select_option("PrimaryEmail")
    page.get_by_label("First name").select_option("FirstName")
    page.get_by_label("Last name").select_option("LastName")
    picture(page, tmp_path, "export")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text(SAVED)).to_be_visible()
    assert sandbox.members(list_id) == []  # saving does not run

    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(r"/api/console/runs/high-value\.[0-9a-f]{32}$"))
    expect(page.locator("#run-status")).to_have_text(
        "Completed: every contact was delivered.", timeout=60_000
    )
    report = page.locator(".report-facts")
    expect(report).to_contain_text(f"{counts.rows:,}")
    expect(report).to_contain_text(f"{counts.contacts:,}")
    picture(page, tmp_path, "run")
    assert len(sandbox.members(list_id)) == counts.contacts

    page.get_by_role("navigation").get_by_role("link", name="Home").click()
    expect(page.get_by_role("link", name="high-value")).to_be_visible()
    picture(page, tmp_path, "home")
