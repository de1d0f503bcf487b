"""The console's exports pages in a real browser, through ``ccexport serve`` and the
Constant Contact sandbox: add an export as a person would (a list chosen by name, a
new list, Email, First name and Last name from model.json's columns, an attribute, a
custom field made there, the segment from the inbox), Save (which runs nothing),
Preview (the counts of the sample, sending nothing), Run now (the run's page, and the
people in the sandbox's lists), mirror's preview, a stale save, Delete; what a
contributor of another role sees; and refusals in words."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from bench.sample import EXPORT, TABLE, SampleCounts, write_sample
from shared.console.export_editing import SAVED
from tests.browser.conftest import axe_violations, console_url
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.serve_service import RunningServe, running_serve

ROWS = 600
CONNECTION = "crm"
NAME = "high-value"
RUN_TIMEOUT = 60.0
ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@pytest.fixture
def counts(console: RunningServe, tmp_path: Path) -> SampleCounts:
    """The sample export in serve's inbox, before any export could match it."""
    return write_sample(tmp_path / "inbox", ROWS, bad_every=50, duplicate_every=40)


def connect(page: Page, serve: RunningServe, roles: list[str]) -> None:
    """The connection, through serve's HTTP API: created with consent, then connected
    through the sandbox's OAuth redirects (in this browser, which the sign-in is bound to)."""
    body = {"display_name": "CRM", "roles": roles, "privacy_consent": {"accepted": True}}
    made = page.request.put(
        f"{serve.api}/connections/{CONNECTION}",
        data=body,
    )
    assert made.status == 201, made.text()
    page.goto(f"{serve.api}/connections/{CONNECTION}/connect")
    expect(page.get_by_text("now connected")).to_be_visible()


def api_json(page: Page, url: str) -> Any:
    answer = page.request.get(url)
    assert answer.ok, answer.text()
    return answer.json()


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=tmp_path / f"{name}.png", full_page=True)


def assert_fits_a_phone(page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert axe_violations(page) == []
    page.set_viewport_size({"width": 1280, "height": 900})


def wait_for_members(sandbox: RunningSandbox, list_id: str, expected: int) -> list[str]:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        members = sandbox.members(list_id)
        if len(members) >= expected:
            return members
        time.sleep(0.3)
    raise AssertionError(f"list {list_id} has {len(sandbox.members(list_id))} of {expected}")


def wait_for_run(page: Page, serve: RunningServe, run_id: str) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        status = api_json(page, f"{serve.api}/runs/{run_id}")["runtime_status"]
        if status in {"Completed", "Failed", "Terminated"}:
            return str(status)
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not end in {RUN_TIMEOUT:.0f}s")


@pytest.fixture
def contributor(
    console: RunningServe, sandbox: RunningSandbox, tmp_path: Path
) -> Iterator[RunningServe]:
    """A second serve over the same home and inbox, signed in as bob of role sales."""
    env = cli_env(sandbox, tmp_path / "home", RUN_QUIET_SECONDS="0")
    with running_serve(
        env, "--inbox", str(tmp_path / "inbox"), "--no-timer", "--user", "bob",
        "--role", "sales", log=tmp_path / "bob.log",
    ) as serve:  # fmt: skip
        yield serve


def form_token(context: BrowserContext) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "ccexport_form")


def add_the_export(page: Page, sandbox: RunningSandbox, tmp_path: Path) -> tuple[str, str]:
    """Fill the add form as a person would; returns the two lists' names."""
    chosen, created = f"Chosen {uuid.uuid4().hex[:8]}", f"New {uuid.uuid4().hex[:8]}"
    sandbox.create_list(chosen)
    page.get_by_label("Export name").fill(NAME)
    page.get_by_role("button", name="Update lists and columns").click()
    page.get_by_label(chosen).check()
    page.get_by_label("New list").fill(created)
    page.get_by_role("button", name="Create list").click()
    expect(page.get_by_role("status")).to_have_text(
        f"List {created!r} created in the account, and chosen."
    )
    expect(page.get_by_label(created)).to_be_checked()
    expect(page.get_by_label(chosen)).to_be_checked()  # what was chosen stays chosen
    page.get_by_label(f"{EXPORT} / {TABLE}").check()
    email = page.get_by_label("Email (required)")
    columns = email.locator("option").all_inner_texts()
    assert columns[1:] == [
        "CustomerId", "PrimaryEmail", "FirstName", "LastName", "City", "PostalCode",
        "PrimaryPhone", "Tier",
    ]  # fmt: skip
    email.select_option("PrimaryEmail")
    page.get_by_label("First name").select_option("FirstName")
    page.get_by_label("Last name").select_option("LastName")
    page.get_by_role("button", name="Add attribute").click()
    page.locator("#attr_field_1").select_option("city")
    page.locator("#attr_column_1").select_option("City")
    page.get_by_label("New custom field").fill("tier")
    page.get_by_role("button", name="Create custom field").click()
    expect(page.get_by_role("status")).to_contain_text("Custom field 'tier'")
    expect(page.locator("#attr_field_2")).to_have_value("cf:tier")
    expect(page.get_by_label("Email (required)")).to_have_value("PrimaryEmail")
    page.locator("#attr_column_2").select_option("Tier")
    assert axe_violations(page) == []
    shot(page, tmp_path, "export-add")
    page.get_by_role("button", name="Save").click()
    return chosen, created


@dataclass(frozen=True)
class Scene:
    """One admin's serve and browser page, with the sample in the inbox."""

    serve: RunningServe
    counts: SampleCounts
    sandbox: RunningSandbox
    page: Page
    shots: Path

    @property
    def base(self) -> str:
        return console_url(self.serve)

    def api(self, path: str) -> Any:
        return api_json(self.page, f"{self.serve.api}/{path}")

    def shot(self, name: str) -> None:
        shot(self.page, self.shots, name)


@pytest.fixture
def scene(
    console: RunningServe, counts: SampleCounts, sandbox: RunningSandbox, page: Page, tmp_path: Path
) -> Scene:
    connect(page, console, ["marketing"])
    return Scene(console, counts, sandbox, page, tmp_path)


def refused_in_words(scene: Scene) -> None:
    """No Email, a bad name: said next to the controls, and nothing saved."""
    page = scene.page
    page.goto(f"{scene.base}exports")
    expect(page.get_by_text("No exports yet.")).to_be_visible()
    page.get_by_role("link", name="Add export").click()
    expect(page).to_have_title("Add export · ccexport")
    page.get_by_label("Export name").fill("High Value!")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#name-error")).to_contain_text("1-63 lower-case letters")
    expect(page.locator("#email-error")).to_have_text(
        "Choose the column that holds the email address: Email is required."
    )
    expect(page.get_by_role("heading", name="Nothing was saved")).to_be_visible()
    assert scene.api("exports") == {"exports": []}
    assert axe_violations(page) == []
    scene.shot("export-refused-fields")


def saved_as_filled(scene: Scene, chosen: str, created: str) -> None:
    page = scene.page
    expect(page).to_have_url(f"{scene.base}exports/{NAME}?saved=1")
    expect(page.get_by_text(SAVED)).to_be_visible()
    assert scene.api(f"runs?export={NAME}") == {"runs": []}  # saving ran nothing
    saved = scene.api(f"exports/{NAME}")
    assert saved["list_ids"] == [chosen, created]
    assert saved["mapping"] == {
        "email": "PrimaryEmail", "first_name": "FirstName", "last_name": "LastName",
        "city": "City", "cf:tier": "Tier",
    }  # fmt: skip
    assert saved["segments"] == [{"export": EXPORT, "table": TABLE}]
    assert axe_violations(page) == []
    scene.shot("export-saved")
    assert_fits_a_phone(page)


def previewed(scene: Scene) -> None:
    """Preview: the sample's own counts, nothing sent, no address on the page."""
    page, counts = scene.page, scene.counts
    page.get_by_role("button", name="Preview").click()
    expect(page).to_have_title(f"Preview of export {NAME} · ccexport")
    for key, value in (
        ("rows_read", counts.rows), ("contacts", counts.contacts),
        ("duplicates", counts.duplicates), ("rejected", counts.bad), ("sent", counts.contacts),
    ):  # fmt: skip
        expect(page.locator(f'[data-count="{key}"]')).to_have_text(f"{value:,}")
    expect(page.locator('[data-reason="invalid_email"]')).to_have_text(f"{counts.bad:,}")
    assert not ADDRESS.search(page.content())
    assert scene.api(f"runs?export={NAME}") == {"runs": []}
    assert axe_violations(page) == []
    scene.shot("export-preview")
    assert_fits_a_phone(page)


def run_now_fills_the_lists(scene: Scene, chosen: str, created: str) -> None:
    """Run now: the run's page, the people in both lists, the run on the list page."""
    page, counts = scene.page, scene.counts
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(rf"/api/console/runs/{NAME}\.[0-9a-f]{{32}}$"))
    run_id = page.url.rsplit("/", 1)[1]
    lists = scene.api(f"connections/{CONNECTION}/lists")["lists"]
    ids = {entry["name"]: entry["list_id"] for entry in lists}
    for name in (chosen, created):
        members = wait_for_members(scene.sandbox, ids[name], counts.contacts)
        assert len(members) == counts.contacts
    assert wait_for_run(page, scene.serve, run_id) == "Completed"
    page.goto(f"{scene.base}exports")
    row = page.get_by_role("row", name=re.compile(NAME))
    expect(row).to_contain_text(f"{chosen}, {created}")
    expect(row).to_contain_text(f"{EXPORT} / {TABLE}")
    expect(row.get_by_role("link", name=re.compile(r"\d{4}-\d{2}-\d{2}"))).to_have_attribute(
        "href", f"/api/console/runs/{run_id}"
    )
    assert axe_violations(page) == []
    scene.shot("exports")
    assert_fits_a_phone(page)


def mirror_previewed_and_run_again(scene: Scene) -> None:
    """Mirror: Preview compares with the run just sent and tells the removals it can;
    Run now again on the same files says they were sent, with the run's link."""
    page = scene.page
    page.get_by_role("link", name=NAME, exact=True).click()
    page.get_by_label("Mode").select_option("mirror")
    page.get_by_label("Removal limit (%)").fill("10")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text(SAVED)).to_be_visible()
    assert scene.api(f"exports/{NAME}")["max_removal_share"] == 0.1
    page.get_by_role("button", name="Preview").click()
    expect(page.locator('[data-count="unchanged"]')).to_have_text(f"{scene.counts.contacts:,}")
    expect(page.locator('[data-count="sent"]')).to_have_text("0")
    expect(page.locator('[data-count="removal_candidates"]')).to_have_text("0")
    expect(page.get_by_text("more than 10 % of a list stops")).to_be_visible()
    scene.shot("export-preview-mirror")
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name="Not now")).to_be_visible()
    expect(page.get_by_text("already sent these files")).to_be_visible()
    expect(page.get_by_role("link", name="Open the run")).to_be_visible()
    expect(page.get_by_role("button", name="Send again")).to_be_visible()
    assert axe_violations(page) == []
    scene.shot("export-run-refused")


def stale_save_refused(scene: Scene) -> None:
    """Someone saved meanwhile: this save is the 412 page, and theirs is kept."""
    page = scene.page
    page.goto(f"{scene.base}exports/{NAME}")
    read = page.request.get(f"{scene.serve.api}/exports/{NAME}")
    answer = page.request.put(
        f"{scene.serve.api}/exports/{NAME}",
        data={**read.json(), "enabled": False},
        headers={"If-Match": read.headers["etag"]},
    )
    assert answer.status == 200, answer.text()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Someone changed this meanwhile")).to_be_visible()
    assert scene.api(f"exports/{NAME}")["enabled"] is False


def contributor_kept_out(scene: Scene, contributor: RunningServe, browser: Browser) -> None:
    """A contributor of another role: neither the export nor its actions, by button or
    by route."""
    other = browser.new_context(viewport={"width": 1280, "height": 900})
    theirs, base = other.new_page(), console_url(contributor)
    theirs.goto(f"{base}exports")
    expect(theirs.get_by_text("No exports yet.")).to_be_visible()
    expect(theirs.get_by_role("link", name=NAME)).to_have_count(0)
    answer = theirs.goto(f"{base}exports/{NAME}")
    assert answer is not None
    assert answer.status == 403
    expect(theirs.get_by_role("heading", name="You may not do this")).to_be_visible()
    expect(theirs.get_by_text("your roles do not allow its connection")).to_be_visible()
    expect(theirs.get_by_role("button", name="Run now")).to_have_count(0)
    shot(theirs, scene.shots, "export-contributor-refused")
    token: dict[str, str | float | bool] = {"form_token": form_token(other)}
    for route in ("run", "preview", "delete"):
        refused = theirs.request.post(f"{base}exports/{NAME}/{route}", form=token)
        assert refused.status == 403, route
    theirs.goto(f"{base}exports/new")
    expect(theirs.get_by_text("No connection you may use exists yet")).to_be_visible()
    made = theirs.request.post(
        f"{base}exports/new",
        form={**token, "connection": CONNECTION, "new_list": "Theirs", "action": "new_list"},
    )
    assert made.status == 404
    other.close()


def deleted_after_confirming(scene: Scene) -> None:
    page = scene.page
    page.goto(f"{scene.base}exports/{NAME}")
    page.get_by_role("link", name="Delete").click()
    expect(page.get_by_role("heading", name=f"Delete export {NAME}?")).to_be_visible()
    assert axe_violations(page) == []
    scene.shot("export-delete")
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"{scene.base}exports?deleted={NAME}")
    expect(page.get_by_role("status")).to_contain_text(f"Export {NAME} deleted")
    expect(page.get_by_text("No exports yet.")).to_be_visible()
    assert scene.api("exports") == {"exports": []}


def test_an_export_is_added_saved_previewed_run_and_deleted(
    scene: Scene, contributor: RunningServe, browser: Browser
) -> None:
    refused_in_words(scene)
    chosen, created = add_the_export(scene.page, scene.sandbox, scene.shots)
    saved_as_filled(scene, chosen, created)
    previewed(scene)
    run_now_fills_the_lists(scene, chosen, created)
    mirror_previewed_and_run_again(scene)
    stale_save_refused(scene)
    contributor_kept_out(scene, contributor, browser)
    deleted_after_confirming(scene)


def test_run_now_without_a_connected_account_says_so_with_the_fix(
    console: RunningServe, counts: SampleCounts, page: Page, tmp_path: Path
) -> None:
    body = {"display_name": "CRM", "roles": [], "privacy_consent": {"accepted": True}}
    made = page.request.put(
        f"{console.api}/connections/{CONNECTION}",
        data=body,
    )
    assert made.status == 201
    base = console_url(console)
    page.goto(f"{base}exports/new")
    expect(page.get_by_text("is not connected to a Constant Contact account yet")).to_be_visible()
    expect(page.get_by_role("link", name="Open the connection")).to_have_attribute(
        "href", f"/api/console/connections/{CONNECTION}"
    )
    page.get_by_label("Export name").fill(NAME)
    page.get_by_label("New list").fill("Anything")
    page.get_by_role("button", name="Create list").click()
    expect(page.locator("#new_list-error")).to_contain_text("must be connected again")
    definition = {
        "connection": CONNECTION,
        "list_ids": ["Somewhere"],
        "mapping": {"email": "PrimaryEmail"},
        "segments": [{"export": EXPORT, "table": TABLE}],
    }
    saved = page.request.put(
        f"{console.api}/exports/{NAME}",
        data=definition,
    )
    assert saved.status == 201, saved.text()
    page.goto(f"{base}exports/{NAME}")
    expect(page.get_by_label("Somewhere")).to_be_checked()  # kept, though unreadable now
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name="Not now")).to_be_visible()
    expect(page.get_by_text("is not connected to Constant Contact yet")).to_be_visible()
    expect(page.get_by_role("link", name="Open the connection")).to_be_visible()
    assert "Traceback" not in page.content()
    assert axe_violations(page) == []
    shot(page, tmp_path, "export-run-not-connected")
