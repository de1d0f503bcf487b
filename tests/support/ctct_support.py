"""Small helpers shared by the Constant Contact client, token and CLI tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence

from shared.constant_contact.transport import RetryPolicy
from tests.support.sandbox_service import RunningSandbox
from tests.support.services import ROOT

# Retries as production does them, only with millisecond backoff.
FAST = RetryPolicy(attempts=4, throttled_attempts=12, backoff_base=0.02, backoff_cap=0.2)


class SandboxTokens:
    """A token provider backed by the sandbox's mint endpoint, counting what it was asked.

    ``bogus`` first tokens make the API answer 401, to exercise the refresh path.
    """

    def __init__(self, sandbox: RunningSandbox, *, bogus: int = 0) -> None:
        self._sandbox = sandbox
        self._bogus = bogus
        self._token: str | None = None
        self.forced = 0
        self.issued: list[str] = []

    async def __call__(self, force_refresh: bool = False) -> str:
        if force_refresh:
            self.forced += 1
        if self._token is None or force_refresh:
            if self._bogus > 0:
                self._bogus -= 1
                self._token = "not-a-token-" + str(self._bogus)
            else:
                self._token = await asyncio.to_thread(self._sandbox.access_token)
                self.issued.append(self._token)
        return self._token


def ccexport_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "shared.workstation.cli", *args]


def run_cli(
    args: Sequence[str], env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ccexport_command(*args),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
