"""Running an export until it is done, and checking what the run promises afterwards.

``run_to_the_end`` does what an operator does with a run that did not deliver
everything: start it again under the same run id (the resume contract in
shared/runs/contract.py) until it completes, a bounded number of times. ``check_delivery``
then asserts the three promises of every fault run:

1. the list holds exactly the segment's valid contacts (nothing lost, nothing extra);
2. no chunk was imported more than twice (sandbox: accepted import bodies by digest;
   an import that ended failed or timed out imported nothing and is not counted);
3. every report accounts for every row: rows_read = contacts + rejected + duplicates
   and contacts = delivered + not delivered + unconfirmed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.pacing import Pacer
from shared.constant_contact.tokens import tokens_secret
from shared.exports.definitions import ExportDefinition
from shared.runs.activities import RunActivities, RunServices
from shared.runs.contract import RunInput, RunOptions, RunStatus
from shared.runs.ids import new_run_id
from shared.secrets.store import LocalFileSecretStore, SecretStore
from shared.wiring import clients
from shared.workstation.local_run import LocalRunResult, run_locally
from tests.chaos.figures import FIGURES
from tests.chaos.segment import MAPPING, Segment
from tests.support.ctct_support import FAST
from tests.support.sandbox_service import RunningSandbox, cli_env

RUN_TIMEOUT = 120.0
NOTHING_IMPORTED = frozenset({"failed", "timed_out"})


def options(body_bytes: int, **changes: Any) -> RunOptions:
    return RunOptions(max_body_bytes=body_bytes, poll_seconds=0.2, retry_seconds=0.2, **changes)


def env_for(sandbox: RunningSandbox, home: Path, storage: str | None) -> dict[str, str]:
    env = cli_env(sandbox, home)
    if storage is not None:
        env["CCEXPORT_STORAGE_CONNECTION_STRING"] = storage
    return env


def services_for(env: Mapping[str, str], pacer: Pacer | None = None) -> RunServices:
    """The run's services from settings, with fast retries and (unless given) a fast pacer
    of its own: throttling is a fault a test injects, not a pace it waits for."""
    return replace(clients.run_services_from(env), retry=FAST, pacer=pacer or Pacer(40.0))


def run_input(source: str, list_id: str, run_options: RunOptions) -> RunInput:
    export = ExportDefinition(list_ids=(list_id,), mapping=MAPPING, name="chaos")
    now = datetime.now(UTC)
    return RunInput.create(
        new_run_id("chaos", now), export, source, requested_at=now, options=run_options
    )


def store_tokens(
    sandbox: RunningSandbox, store: SecretStore, connection: str = "default", *, aged: bool = False
) -> str:
    """Tokens as ``ccexport connect`` stores them; returns the refresh token (for scans).

    ``aged``: issued an hour ago, so the run's first request needs a refresh.
    """
    issued = time.time() - (3600 if aged else 0)
    bundle = TokenBundle.from_response(sandbox.tokens(), issued)

    async def put() -> None:
        await store.set(tokens_secret(connection), bundle.to_json())
        await store.close()

    asyncio.run(put())
    return str(bundle.refresh_token)


def connect_locally(sandbox: RunningSandbox, home: Path, *, aged: bool = False) -> str:
    return store_tokens(sandbox, LocalFileSecretStore(home), aged=aged)


@dataclass
class Rounds:
    results: list[LocalRunResult]

    @property
    def last(self) -> LocalRunResult:
        return self.results[-1]

    def reports(self) -> list[dict[str, Any]]:
        return [r.report for r in self.results if r.report is not None]


def run_to_the_end(
    run: RunInput, activities: Callable[[], RunActivities], *, most: int = 5
) -> Rounds:
    """Run, and start again under the same id while something was not delivered."""
    results: list[LocalRunResult] = []
    for _ in range(most):
        result = run_locally(run, activities(), timeout=RUN_TIMEOUT)
        FIGURES.run()
        results.append(result)
        if result.outcome.status is RunStatus.COMPLETED:
            break
    return Rounds(results)


def check_report(report: Mapping[str, Any], segment: Segment) -> None:
    counts = report["counts"]
    assert counts["rows_read"] == segment.rows, "rows_read is what a strict reader sees"
    assert counts["rows_read"] == counts["contacts"] + counts["rejected"] + counts["duplicates"]
    assert counts["contacts"] == len(segment.expected)
    assert (counts["rejected"], counts["duplicates"]) == (segment.rejected, segment.duplicates)
    assert counts["contacts"] == (
        counts["contacts_delivered"] + counts["contacts_not_delivered"]
        + counts["contacts_unconfirmed"]
    )  # fmt: skip


def chunk_sends(sandbox: RunningSandbox, list_id: str) -> list[int]:
    """For each import body sent for the list: imports of it that imported something."""
    return [
        sum(1 for state in body["states"] if state not in NOTHING_IMPORTED)
        for body in sandbox.imports(list_id)
    ]


def check_delivery(
    sandbox: RunningSandbox, list_id: str, segment: Segment, reports: list[dict[str, Any]]
) -> None:
    """The three promises, over the reports of every run of one run id; adds the figures."""
    members = sandbox.members(list_id)
    expected = set(segment.expected)
    missing, extra = expected - set(members), set(members) - expected
    sends = chunk_sends(sandbox, list_id)
    FIGURES.delivery(
        len(expected),
        len(missing) + len(extra),
        len(sends),
        sum(1 for n in sends if n >= 2),
        max(sends, default=0),
    )
    assert reports, "no run left a report"
    for report in reports:
        check_report(report, segment)
    final = reports[-1]
    assert final["status"] == RunStatus.COMPLETED, (
        f"not completed after {len(reports)} runs: {final['status']} {final['error']}"
    )
    assert not missing, f"{len(missing)} valid contacts are not in the list"
    assert not extra, f"{len(extra)} contacts in the list are not valid contacts of the segment"
    assert len(members) == len(expected)  # each once
    assert max(sends, default=0) <= 2, f"a chunk was imported {max(sends)} times"
    assert final["counts"]["contacts_delivered"] == len(expected)
