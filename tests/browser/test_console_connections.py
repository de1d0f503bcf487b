"""The console's connections pages in a real browser, through ``ccexport serve`` and the
Constant Contact sandbox: an admin adds a connection with consent, connects it through
the sandbox's OAuth and comes back to its page connected to the account, edits it and
removes it (its tokens gone); a contributor sees only the connections that list one of
their roles, and no admin action, neither its button nor its route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from sandbox.api_account import SUMMARY
from shared.constant_contact.tokens import tokens_secret
from shared.secrets.store import LocalFileSecretStore
from tests.browser.conftest import axe_violations, console_url
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.serve_service import RunningServe, running_serve
from tests.support.services import ServiceError

ORGANIZATION = str(SUMMARY["organization_name"])
OWNER_EMAIL = str(SUMMARY["contact_email"])


def shown(page: Page, shots: Path, name: str) -> str:
    """Check the page as it stands (no serious or critical axe finding, no owner's
    address), save its screenshot, and return its text."""
    assert axe_violations(page) == [], name
    text = page.locator("body").inner_text()
    assert OWNER_EMAIL not in page.content()
    page.screenshot(path=shots / f"{name}.png", full_page=True)
    return text


def fits_a_phone(page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert axe_violations(page) == []
    page.set_viewport_size({"width": 1280, "height": 900})


def has_tokens(home: Path, name: str) -> bool:
    """Whether serve's secret store (files under its home) holds the connection's tokens."""
    return LocalFileSecretStore(home).path_of(tokens_secret(name)).is_file()


def facts(page: Page) -> dict[str, str]:
    """The connection page's facts, term by term, as a person reads them."""
    terms = page.locator("dl.facts dt").all_inner_texts()
    values = page.locator("dl.facts dd").all_inner_texts()
    return dict(zip(terms, values, strict=True))


def test_an_admin_adds_connects_edits_and_removes_a_connection(
    console: RunningServe, page: Page, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    base = console_url(console)
    page.goto(f"{base}connections")
    expect(page).to_have_title("Connections · ccexport")
    assert "No connections yet" in shown(page, tmp_path, "connections-empty")

    page.get_by_role("link", name="Add connection").click()
    expect(page.get_by_role("heading", name="Add connection")).to_be_visible()
    page.get_by_label("Connection name").fill("crm")
    page.get_by_label("Display name").fill("Constant Contact (marketing)")
    page.get_by_label("Other roles").fill("marketing")
    terms = page.get_by_role("region", name="Data privacy and compliance terms")
    expect(terms).to_contain_text("processor outside Dynamics 365 Customer Insights")
    page.get_by_label("I agree").check()
    shown(page, tmp_path, "connection-new")
    page.get_by_role("button", name="Save").click()

    expect(page).to_have_url(f"{base}connections/crm?done=created")
    expect(page.get_by_role("heading", name="Constant Contact (marketing)")).to_be_visible()
    shown(page, tmp_path, "connection-added")
    added = facts(page)
    assert added["Status"] == "Not connected"
    assert added["Account"] == "None yet"
    assert added["Who can use this connection"] == "Admins, and marketing"
    assert added["Data privacy and compliance"].startswith("Agreed on ")
    expect(page.get_by_role("button", name="Reconnect")).to_have_count(0)

    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.get_by_role("heading", name="Connect Constant Contact (marketing)")).to_be_visible()
    shown(page, tmp_path, "connection-connect")
    page.get_by_role("link", name="Continue to Constant Contact").click()  # the sandbox approves

    expect(page).to_have_url(f"{base}connections/crm?done=connected")
    text = shown(page, tmp_path, "connection-connected")
    assert "Connected: the Constant Contact account is connected." in text
    connected = facts(page)
    assert connected["Status"] == "Connected"
    assert connected["Account"] == ORGANIZATION
    assert connected["Connected on"].endswith(" UTC")
    assert has_tokens(home, "crm")
    expect(page.get_by_role("button", name="Reconnect")).to_be_visible()
    fits_a_phone(page)

    page.get_by_label("Display name").fill("Constant Contact (marketing team)")
    page.get_by_label("marketing", exact=True).uncheck()
    page.get_by_label("contributor").check()
    page.get_by_label("Other roles").fill("sales")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"{base}connections/crm?done=saved")
    shown(page, tmp_path, "connection-saved")
    edited = facts(page)
    assert edited["Who can use this connection"] == "Admins, and contributor, sales"
    assert edited["Status"] == "Connected"  # an edit keeps the account connected
    expect(page.get_by_role("heading", name="Constant Contact (marketing team)")).to_be_visible()

    page.get_by_role("link", name="All connections").click()
    row = page.get_by_role("row", name="Constant Contact (marketing team)")
    expect(row).to_contain_text("Connected")
    expect(row).to_contain_text(ORGANIZATION)
    expect(row).to_contain_text("Admins, and contributor, sales")
    shown(page, tmp_path, "connections")
    fits_a_phone(page)

    definition = {
        "connection": "crm",
        "list_ids": [sandbox.create_list()],
        "mapping": {"email": "PrimaryEmail"},
        "segments": [{"export": "BlobExport", "table": "HighValue"}],
    }
    saved = page.request.put(f"{console.api}/exports/high-value", data=definition)
    assert saved.status == 201, saved.text()
    row.get_by_role("link", name="Constant Contact (marketing team)").click()
    page.get_by_role("link", name="Remove").click()
    expect(
        page.get_by_role("heading", name="Remove Constant Contact (marketing team)?")
    ).to_be_visible()
    text = shown(page, tmp_path, "connection-remove")
    assert "Exports that use it stop sending: high-value." in text
    expect(page.get_by_role("link", name="high-value")).to_have_attribute(
        "href", "/api/console/exports/high-value"
    )
    assert "Runs in flight over it stop before their next upload" in text
    assert "Its tokens are deleted from the secret store" in text
    page.get_by_role("button", name="Remove").click()

    expect(page).to_have_url(f"{base}connections?done=removed")
    text = shown(page, tmp_path, "connections-removed")
    assert "The connection was removed, and its tokens deleted." in text
    assert "marketing team" not in text
    assert not has_tokens(home, "crm")
    assert OWNER_EMAIL not in console.log_text()
    for kept in (p for p in home.rglob("*") if p.is_file()):
        assert OWNER_EMAIL not in kept.read_text(errors="replace"), kept


def test_a_form_that_cannot_be_saved_says_why_and_keeps_what_was_typed(
    console: RunningServe, page: Page, tmp_path: Path
) -> None:
    base = console_url(console)
    page.goto(f"{base}connections/new")
    page.get_by_label("Connection name").fill("Bad Name")
    page.get_by_label("Display name").fill("Typed")
    page.get_by_role("button", name="Save").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("use 1-63 lower-case letters, digits and dashes")
    expect(page.get_by_label("Display name")).to_have_value("Typed")
    shown(page, tmp_path, "connection-new-refused")


def seed(page: Page, serve: RunningServe, name: str, roles: list[str]) -> None:
    """A connection made through the HTTP API, as an admin's script would."""
    body: dict[str, Any] = {"display_name": f"Team {name}", "roles": roles}
    answer = page.request.put(f"{serve.api}/connections/{name}", data=body)
    assert answer.status == 201, answer.text()


def test_a_contributor_sees_only_their_connections_and_no_admin_action(
    console: RunningServe, browser: Browser, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    admin = browser.new_context()
    seed(admin.new_page(), console, "crm", ["marketing"])
    seed(admin.new_page(), console, "finance", ["finance"])
    admin.close()
    env = cli_env(sandbox, tmp_path / "home", RUN_QUIET_SECONDS="0")
    args = ("--inbox", str(tmp_path / "inbox"), "--no-timer", "--user", "ana")
    try:
        with running_serve(
            env, *args, "--role", "marketing", log=tmp_path / "contributor.log"
        ) as contributor:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            base = console_url(contributor)
            page.goto(f"{base}connections")
            text = shown(page, tmp_path, "contributor-connections")
            expect(page.get_by_role("row")).to_have_count(2)  # the header and crm
            assert "Team crm" in text
            assert "Team finance" not in text
            expect(page.get_by_role("link", name="Add connection")).to_have_count(0)

            page.get_by_role("link", name="Team crm").click()
            text = shown(page, tmp_path, "contributor-connection")
            assert facts(page)["Status"] == "Not connected"
            for action in ("Connect", "Reconnect", "Save", "Remove"):
                expect(page.get_by_role("button", name=action)).to_have_count(0)
            expect(page.get_by_role("link", name="Remove")).to_have_count(0)
            expect(page.get_by_label("Display name")).to_have_count(0)

            for route, what in (
                ("connections/new", "only an admin may add connections"),
                ("connections/crm/remove", "only an admin may remove connections"),
            ):
                answer = page.goto(f"{base}{route}")
                assert answer is not None
                assert answer.status == 403
                expect(page.get_by_role("heading", name="You may not do this")).to_be_visible()
                expect(page.get_by_role("alert")).to_contain_text(what)
            shown(page, tmp_path, "contributor-refused")

            token = next(c["value"] for c in context.cookies() if c["name"] == "ccexport_form")
            for route, what in (
                ("connections/crm", "only an admin may change connections"),
                ("connections/crm/connect", "only an admin may connect accounts"),
                ("connections/crm/remove", "only an admin may remove connections"),
                ("connections/new", "only an admin may add connections"),
            ):
                posted = page.request.post(
                    f"{base}{route}",
                    form={"form_token": token, "display_name": "Mine", "etag": "x"},
                    headers={"Origin": contributor.origin},
                )
                assert posted.status == 403, route
                assert what in posted.text()

            hidden = page.goto(f"{base}connections/finance")
            assert hidden is not None
            assert hidden.status == 404  # not theirs: answered as unknown
            context.close()
    except ServiceError as exc:
        pytest.fail(str(exc))
    assert not has_tokens(tmp_path / "home", "crm")
