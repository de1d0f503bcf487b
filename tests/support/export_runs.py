"""What the export-run tests share (tests/test_export_run.py and the tests of runs
after it): a small export of several chunks that polls fast, tokens as `ccexport
connect` stores them, and the run's services with fast retries."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.sample import write_sample
from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.tokens import tokens_secret
from shared.exports.definitions import ExportDefinition
from shared.runs.activities import RunActivities, RunServices
from shared.runs.contract import RunInput, RunOptions
from shared.runs.ids import new_run_id
from shared.secrets.store import LocalFileSecretStore
from shared.wiring import clients
from shared.workstation.local_run import LocalRunResult, run_locally
from tests.support.ctct_support import FAST
from tests.support.sandbox_service import RunningSandbox, cli_env

ROWS = 2_000
BODY_BYTES = 40_000  # about 500 contacts a body: 4 chunks
OPTIONS = RunOptions(max_body_bytes=BODY_BYTES, poll_seconds=0.2, retry_seconds=0.2)
MAPPING = {"email": "PrimaryEmail", "first_name": "FirstName", "city": "City"}
TIMEOUT = 60.0


def write_export_sample(out: Path) -> None:
    """The export-run tests' sample under ``out``: ROWS rows in two parts, every 97th
    address broken and every 101st row a duplicate (1,961 contacts, about four chunks)."""
    write_sample(out, ROWS, parts=2, bad_every=97, duplicate_every=101)


def store_bundle(home: Path, bundle: TokenBundle, connection: str = "default") -> None:
    """Store ``bundle`` as the connection's tokens in the file store under ``home``."""

    async def store() -> None:
        async with LocalFileSecretStore(home) as secrets:
            await secrets.set(tokens_secret(connection), bundle.to_json())

    asyncio.run(store())


def connect(sandbox: RunningSandbox, home: Path, connection: str = "default") -> None:
    """Store tokens as `ccexport connect` would, minted by the sandbox."""
    store_bundle(home, TokenBundle.from_response(sandbox.tokens(), time.time()), connection)


def env_for(sandbox: RunningSandbox, home: Path, storage: str | None) -> dict[str, str]:
    env = cli_env(sandbox, home)
    if storage is not None:
        env["CCEXPORT_STORAGE_CONNECTION_STRING"] = storage
    return env


def services_for(env: dict[str, str]) -> RunServices:
    return replace(clients.run_services_from(env), retry=FAST)


def run_input(
    source: str, list_id: str, run_id: str | None = None, options: RunOptions = OPTIONS
) -> RunInput:
    export = ExportDefinition(list_ids=(list_id,), mapping=MAPPING, name="e2e")
    return RunInput.create(
        run_id or new_run_id("e2e", datetime.now(UTC)),
        export,
        source,
        trigger="cli",
        requested_at=datetime.now(UTC),
        options=options,
    )


def imports_accepted(sandbox: RunningSandbox) -> int:
    return sandbox.requests("POST /v3/activities/contacts_json_import").get("201", 0)


def run_export(
    services: RunServices,
    source: str,
    export: ExportDefinition,
    base: RunOptions,
    *,
    run_id: str | None = None,
    **options: Any,
) -> LocalRunResult:
    """Run ``export`` on ``source`` to its end on the local engine, with ``base``'s
    options changed by ``options``; a new run id unless one is given."""
    run = RunInput.create(
        run_id or new_run_id(export.name, datetime.now(UTC)),
        export,
        source,
        requested_at=datetime.now(UTC),
        options=replace(base, **options),
    )
    return run_locally(run, RunActivities(services), timeout=TIMEOUT)
