"""Fixtures of the console's browser tests: a Chromium (tests/browser/provision.py
found it at install; none fails, never skips), ``ccexport serve`` against the
sandbox, and a page with axe-core at hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.browser.provision import CHOICE, PLAYWRIGHT
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.serve_service import RunningServe, running_serve
from tests.support.services import ROOT, ServiceError

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""The closed network here refuses Chromium's own background connections; these keep
it from trying."""


@pytest.fixture(autouse=True)
def _function_app_clients_closed() -> None:
    """The suite's own (async) fixture of that name, replaced: these tests are
    synchronous, and Playwright's synchronous API runs its own loop in this thread,
    where no other may run. The app's clients live in serve's process here."""


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Per module: Playwright's synchronous API holds an event loop in this thread while
    it is open, and the async tests that follow need the thread's loop free."""
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHOICE.is_file():
        pytest.fail("no browser was provisioned: run `make install` (tests/browser/provision.py)")
    choice = CHOICE.read_text(encoding="utf-8").strip()
    path = None if choice == PLAYWRIGHT else choice
    launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def console(sandbox: RunningSandbox, tmp_path: Path) -> Iterator[RunningServe]:
    """``ccexport serve`` as an admin, an empty inbox, no timer; runs poll for their
    imports (which end in well under a second in the shared sandbox) after 0.5 s, not 10."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = cli_env(sandbox, tmp_path / "home", RUN_QUIET_SECONDS="0", RUN_POLL_SECONDS="0.5")
    try:
        with running_serve(
            env, "--inbox", str(inbox), "--no-timer", "--role", "admin",
            log=tmp_path / "serve.log",
        ) as serve:  # fmt: skip
            yield serve
    except ServiceError as exc:
        pytest.fail(str(exc))


def console_url(serve: RunningServe) -> str:
    """The console's address, from serve's second line."""
    return serve.line("console ").split(" ", 1)[1]


def axe_violations(page: Page) -> list[dict[str, object]]:
    """axe-core's serious and critical violations on the page as it stands."""
    # Evaluated through the browser's debugging protocol, which the page's
    # Content-Security-Policy (no inline script) rightly does not let a script tag do.
    page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [v for v in found if v.get("impact") in ("serious", "critical")]
