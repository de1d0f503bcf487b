"""Session-wide services for the tests. A service that cannot start fails the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services


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
