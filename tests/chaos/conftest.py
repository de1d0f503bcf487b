"""The chaos suite's services and its closing figures.

One Constant Contact sandbox serves the whole suite (each run imports into a list of
its own); every test leaves it as it found it: faults cleared, settings restored.
The figures (tests/chaos/figures.py) are printed at the end of the session by
tests/conftest.py, which also adds up the figures of pytest-xdist's workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.chaos.figures import FIGURES
from tests.support import services
from tests.support.sandbox_service import RunningSandbox, running_sandbox

HERE = __file__.rsplit("/", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(HERE):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def _chaos_sandbox() -> Iterator[RunningSandbox]:
    flags = {"rate_limit": 0, "daily_quota": 0, "token_rate_limit": 0, "activity_delay": 0,
             "seed": 8, "client_id": "chaos-client"}  # fmt: skip
    try:
        with running_sandbox(**flags) as running:
            yield running
    except services.ServiceError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def chaos_sandbox(_chaos_sandbox: RunningSandbox) -> Iterator[RunningSandbox]:
    """The suite's sandbox; faults and settings a test changes are undone after it."""
    sandbox = _chaos_sandbox
    settings: dict[str, Any] = sandbox.control("GET", "settings")
    restore = {k: v for k, v in settings.items() if k != "rotating_refresh_tokens"}
    yield sandbox
    sandbox.faults(clear=True)
    sandbox.settings(**restore)
    sandbox.reset_usage()


def count_faults(sandbox: RunningSandbox, before: dict[str, Any]) -> None:
    """Add what the sandbox injected since ``before`` (a stats snapshot) to the figures."""
    after = sandbox.stats()
    for name, fired in after["faults"].items():
        FIGURES.fault(name, fired - before["faults"].get(name, 0))
    FIGURES.fault("throttled_429", after["throttled"] - before["throttled"])
