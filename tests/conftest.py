"""Session-wide services for the tests. A service that cannot start fails the run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.secrets._shared import http_challenge_cache as challenges

from functions.services import close_services
from tests.chaos.figures import FIGURES
from tests.chaos.scale import SCALE
from tests.support import repository_guard, services
from tests.support.function_harness import AppEnv, DurableFake, new_app_env
from tests.support.keyvault_fake import KeyVaultFake
from tests.support.sandbox_service import RunningSandbox, running_sandbox
from tests.support.xdist_groups import ModuleGroups

# Nothing the tests run may read beside the repository (a fresh clone has nothing
# there): every path this process opens or lists in the repository's parent folder,
# outside the repository, fails the test that read it, and the run
# (tests/support/repository_guard.py; the static half is tests/test_repository_bounds.py).
OUTSIDE_READS = repository_guard.install(
    repository_guard.OutsideReads(services.ROOT, repository_guard.default_ignored())
)


def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp:
        OUTSIDE_READS.ignore(config.option.basetemp)


@pytest.fixture(autouse=True)
def _reads_stay_in_the_repository() -> Iterator[None]:
    seen = len(OUTSIDE_READS.found)
    yield
    if len(OUTSIDE_READS.found) > seen:
        found = OUTSIDE_READS.found[seen:]
        pytest.fail(repository_guard.report(found, services.ROOT), pytrace=False)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` (make pytest): whole modules, and the browser tests together,
    per worker (tests/support/xdist_groups.py). tryfirst: xdist's own answers otherwise."""
    if config.getvalue("dist") != "loadgroup":
        return None
    return ModuleGroups(config, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Reads outside any test (collection, session fixtures) fail the run too.

    In a pytest-xdist worker the controller reports them, with the chaos figures: the
    worker hands both over here (its own summary is never shown)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["outside_reads"] = list(OUTSIDE_READS.found)
        workeroutput["chaos_figures"] = FIGURES.to_json()
        return
    if OUTSIDE_READS.found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(repository_guard.report(OUTSIDE_READS.found, services.ROOT))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: a worker's reads outside the repository and its chaos
    figures, added to this process's before the session ends."""
    handed = getattr(node, "workeroutput", {})
    for path in handed.get("outside_reads", ()):
        if path not in OUTSIDE_READS.found:
            OUTSIDE_READS.found.append(path)
    if "chaos_figures" in handed:
        FIGURES.merge(handed["chaos_figures"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The chaos suite's figures (tests/chaos/figures.py), when it ran."""
    if FIGURES.empty() or os.environ.get("CHAOS_FIGURES") == "driver":
        return  # python -m tests.chaos prints them itself, last
    terminalreporter.section("chaos figures")
    for line in FIGURES.lines(SCALE.name):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Azurite blob service; yields its connection string."""
    port = services.free_port()
    workdir: Path = tmp_path_factory.mktemp("azurite")
    try:
        cmd = services.azurite_command(port)
    except services.ServiceError as exc:
        pytest.fail(str(exc))
    with services.running(cmd, port, cwd=workdir):
        yield services.azurite_connection_string(port)


@pytest.fixture(scope="session")
def _keyvault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyVaultFake]:
    fake = KeyVaultFake(tmp_path_factory.mktemp("keyvault"))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def keyvault(_keyvault_server: KeyVaultFake) -> Iterator[KeyVaultFake]:
    """The local Key Vault fake (HTTPS, challenge auth, managed identity), emptied per test.

    `url`, `ca_path`, `credential()` (a stub the vault accepts), `identity_env()` (the
    App Service managed-identity variables pointing at it) and `fail_next()` for faults.
    """
    _keyvault_server.reset()
    challenges.clear()  # the SDK caches the vault's challenge per URL, process-wide
    yield _keyvault_server
    _keyvault_server.reset()


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., RunningSandbox]]:
    """Start Constant Contact sandboxes with CLI flags, e.g. ``sandbox_factory(daily_quota=5)``.

    Each is a child process on 127.0.0.1, stopped by PID when the test ends. The result
    has ``base_url``, ``api_base``, ``auth_base``, ``client_id``, ``client_secret`` and
    helpers: ``access_token()``, ``create_list()``, ``members()``, ``stats()``,
    ``faults(...)``, ``settings(...)``, ``unsubscribe(...)`` (see tests/support/sandbox_service.py).
    """
    with ExitStack() as stack:

        def start(**flags: Any) -> RunningSandbox:
            try:
                return stack.enter_context(running_sandbox(**flags))
            except services.ServiceError as exc:
                pytest.fail(str(exc))

        yield start


@pytest.fixture(scope="session")
def sandbox() -> Iterator[RunningSandbox]:
    """One shared sandbox without rate limits or quota and with fast pacing.

    Shared by the whole session: use it for tests that only create their own lists
    and contacts; use ``sandbox_factory`` for anything that changes limits or faults.
    """
    flags = {"rate_limit": 0, "daily_quota": 0, "token_rate_limit": 0, "activity_delay": 0}
    try:
        with running_sandbox(**flags) as running:
            yield running
    except services.ServiceError as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
async def _function_app_clients_closed() -> AsyncIterator[None]:
    """The clients the function app opened on a test's event loop (it keeps them for the
    loop's life, as a worker does) are closed on that loop when the test ends."""
    yield
    await close_services()


@pytest.fixture
async def durable_fake() -> AsyncIterator[DurableFake]:
    """The Durable HTTP management API on 127.0.0.1; ``.client()`` is a real client."""
    fake = DurableFake()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def app_env(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppEnv:
    """The function app's settings for one test: its own containers, its own home."""
    env = new_app_env(azurite, tmp_path / "home")
    for name in ("KEY_VAULT_URL", "AZURE_CLIENT_ID", "CCEXPORT_STORAGE__blobServiceUri"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.settings().items():
        monkeypatch.setenv(name, value)
    return env
