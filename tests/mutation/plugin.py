"""A pytest plugin for mutation runs only (``-p tests.mutation.plugin``, set in
pyproject.toml's ``[tool.mutmut]``): no test starts a service.

mutmut runs a mutant's tests once per mutant, so a test that starts Azurite, the
sandbox, the Key Vault fake or the Durable fake would start it again for every mutant
(seconds each, on cores other people share). Such tests are skipped when they ask for
the fixture (also through ``request.getfixturevalue``); the mutation tests
(tests/test_mutation_*.py) use in-process fakes instead.
"""

from __future__ import annotations

from typing import Any

import pytest

SERVICE_FIXTURES = frozenset(
    {"azurite", "sandbox", "sandbox_factory", "_keyvault_server", "keyvault", "durable_fake"}
)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    """Skip the test that asks for a service; cached as pytest caches a fixture's skip,
    so every later test that asks for it is skipped the same way."""
    if fixturedef.argname not in SERVICE_FIXTURES:
        return
    try:
        pytest.skip(f"mutation run: {fixturedef.argname} is a service, not started here")
    except pytest.skip.Exception as exc:
        key = getattr(request, "param", None)
        fixturedef.cached_result = (None, key, (exc, exc.__traceback__))
        raise
