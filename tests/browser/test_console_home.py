"""The console's home in a real browser, through ``ccexport serve``."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import axe_violations, console_url
from tests.support.serve_service import RunningServe


def test_serve_names_the_console_on_its_second_line(console: RunningServe) -> None:
    line = console.line("console ")
    assert console.lines.index(line) == 1
    assert line == f"console {console.origin}/api/console/"


def test_the_home_page_says_what_needs_attention_and_lists_exports(
    console: RunningServe, page: Page, tmp_path: Path
) -> None:
    answer = page.goto(console_url(console))
    assert answer is not None
    assert answer.status == 200
    headers = answer.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    expect(page).to_have_title("Home · ccexport")
    expect(page.get_by_role("heading", name="Needs attention")).to_be_visible()
    expect(page.get_by_text("No exports yet.")).to_be_visible()
    for name in ("Home", "Connections", "Exports", "Runs"):
        expect(page.get_by_role("navigation").get_by_role("link", name=name)).to_be_visible()
    assert axe_violations(page) == []
    page.screenshot(path=tmp_path / "home.png", full_page=True)


def test_the_home_page_fits_a_phone(console: RunningServe, page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(console_url(console))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    assert axe_violations(page) == []
