"""Session-wide services for the tests. A service that cannot start fails the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.keyvault_fake import KeyVaultFake


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
    yield _keyvault_server
    _keyvault_server.reset()
