"""The function app's clients: opened once per event loop and settings, then reused.

A worker runs every async invocation on one loop, so the Blob client, the secret store
and the managed identity's token are opened by the first invocation and shared by the
next; ``close_services`` (serve's stop, the tests' teardown) closes them.
"""

from __future__ import annotations

import os

from functions.services import close_services, services
from tests.support.function_harness import AppEnv, DurableFake


async def test_invocations_on_one_loop_share_their_clients_until_closed(app_env: AppEnv) -> None:
    async with services() as first:
        pass
    async with services() as second:
        assert second is first
        assert second.catalog is first.catalog
    async with services({**os.environ, "RUN_QUIET_SECONDS": "5"}) as other:
        assert other is not first  # other settings: clients of their own
        assert other.config.app.quiet_seconds == 5
    await close_services()
    async with services() as reopened:
        assert reopened is not first


async def test_the_launcher_starts_runs_with_the_app_s_poll_seconds(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    async with services({**os.environ, "RUN_POLL_SECONDS": "0.5"}) as fast:
        assert fast.launcher(durable_fake.client()).poll_seconds == 0.5
    async with services() as default:
        assert default.launcher(durable_fake.client()).poll_seconds is None
