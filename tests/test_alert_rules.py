"""The log alert rules over the records real runs write.

The rules live in shared/runs/alerts.py as terms from which both their Kusto queries
(infra/core/alert-queries.json, deployed by infra/core/alerts.bicep) and a Python
evaluation of the same filter are made. No Kusto engine runs here: what is checked is
that the deployed queries are the ones the terms give, and that the Python evaluation
of each rule fires on the records it should and on no other.

The records are captured, not written by hand: runs on the local Durable engine and
the Constant Contact sandbox, one per outcome (completed; with few and with many
rejected rows; some imports failed; every import failed; stopped by its grant; out of
daily quota; a mirror run waiting for confirmation, then confirmed), and a run whose
connection's refresh token Constant Contact refuses. Each log record is kept as the
Functions Python worker hands it to Application Insights, a ``traces`` row: the
record's formatted message and its time. The function-errors rule reads the host's
``requests`` rows, which no code of the app writes: its rows are made here, in that
table's shape.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.sample import EXPORT, RUN, TABLE, write_sample
from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.tokens import mark_needs_reauthorization
from shared.exports.definitions import ExportDefinition
from shared.runs import alerts
from shared.runs.activities import RunServices
from shared.runs.contract import RunOptions
from shared.runs.grants import RunScope
from shared.runs.outcome import RUN_FINISHED, run_finished
from shared.runs.recheck import Cleared, RunGate, RunStopped
from shared.secrets.store import LocalFileSecretStore, SecretStoreError
from shared.wiring import clients
from tests.support.ctct_support import FAST
from tests.support.export_runs import run_export, store_bundle
from tests.support.sandbox_service import RunningSandbox, cli_env, running_sandbox
from tests.support.services import ROOT

QUERIES = ROOT / "infra" / "core" / "alert-queries.json"
OPTIONS = RunOptions(max_body_bytes=3_000, poll_seconds=0.1, retry_seconds=0.2)
ROWS = 200
TIMEOUT = 60.0


# --- capturing what runs log --------------------------------------------------------------


class Traces(logging.Handler):
    """Every record as a ``traces`` row: what the Functions worker sends of it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.rows: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.rows.append(
            {
                "timestamp": datetime.fromtimestamp(record.created, UTC),
                "message": record.getMessage(),
            }
        )


@dataclass
class Captured:
    rows: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)
    """scenario -> run id"""
    outcomes: dict[str, str] = field(default_factory=dict)
    """scenario -> the run's status, as its report says"""
    waiting: int = 0
    """How many rows there were while the mirror run waited for its confirmation."""


class Stopping(RunGate):
    """A grant that stops holding once the run has begun sending (its export deleted)."""

    def __init__(self, cleared: int) -> None:
        self.left = cleared

    async def check(self, scope: RunScope | None) -> Cleared:
        del scope
        self.left -= 1
        if self.left < 0:
            raise RunStopped("export 'stopped' was deleted after the run started")
        return Cleared("")


class FailingStore(LocalFileSecretStore):
    """A secret store that cannot write (Key Vault refusing, say)."""

    async def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        del name, value, content_type, tags
        raise SecretStoreError("the vault refused the write")


def _connected(sandbox: RunningSandbox, home: Path) -> Path:
    store_bundle(home, TokenBundle.from_response(sandbox.tokens(), time.time()))
    return home


def _services(sandbox: RunningSandbox, home: Path, **changes: Any) -> RunServices:
    return replace(clients.run_services_from(cli_env(sandbox, home)), retry=FAST, **changes)


def _sample(root: Path, *, bad_every: int = 0) -> str:
    write_sample(root, ROWS, parts=1, bad_every=bad_every, duplicate_every=0)
    return str(root / EXPORT / TABLE / RUN)


def _people(root: Path, stamp: str, people: Sequence[int]) -> str:
    """A run folder of a mirror export's segment, with a header row."""
    folder = root / "Mirror" / "Subscribers" / "2026" / "11" / "28" / stamp
    folder.mkdir(parents=True)
    with (folder / "Subscribers_1.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Email"])
        writer.writerows([f"person{n:03d}@example.com"] for n in people)
    return str(folder)


def _run(
    captured: Captured,
    scenario: str,
    services: RunServices,
    source: str,
    export: ExportDefinition,
    *,
    run_id: str | None = None,
    **options: Any,
) -> None:
    result = run_export(services, source, export, OPTIONS, run_id=run_id, **options)
    assert result.report is not None, scenario
    captured.runs[scenario] = result.outcome.run_id
    captured.outcomes[scenario] = result.report["status"]


def _capture(sandbox: RunningSandbox, root: Path, traces: Traces) -> Captured:
    captured = Captured(rows=traces.rows)
    mapping = {"email": "PrimaryEmail"}

    def export(name: str, **values: Any) -> ExportDefinition:
        return ExportDefinition(
            list_ids=(sandbox.create_list(),), mapping=values.pop("mapping", mapping), name=name,
            **values,
        )  # fmt: skip

    home = _connected(sandbox, root / "home")
    services = _services(sandbox, home)
    _run(captured, "completed", services, _sample(root / "clean"), export("clean"))
    _run(captured, "few_rejects", services, _sample(root / "few", bad_every=50), export("few"))
    _run(captured, "many_rejects", services, _sample(root / "many", bad_every=4), export("many"))
    stopping = _services(sandbox, home, gate=Stopping(cleared=2))
    _run(captured, "stopped", stopping, _sample(root / "stop"), export("stopped"))

    # A mirror run whose segment came empty waits for confirmation, then is confirmed
    # under its own run id.
    mirror = export("mirror", mode="mirror", mapping={"email": "Email"})
    people = root / "people"
    _run(captured, "mirror_first", services, _people(people, "0900", range(10)), mirror)
    empty = _people(people, "1000", [])
    _run(captured, "waiting", services, empty, mirror)
    captured.waiting = len(traces.rows)
    _run(captured, "confirmed", services, empty, mirror, run_id=captured.runs["waiting"],
         confirm_removals=True)  # fmt: skip

    # A connection whose refresh token Constant Contact refuses: the run cannot send.
    refused = root / "refused"
    now = time.time()
    store_bundle(refused, TokenBundle("expired", "not-a-refresh-token", now - 60, "", now - 3600))
    _run(captured, "reconnect", _services(sandbox, refused), _sample(root / "re"), export("re"))

    async def unrecorded() -> None:  # and one that could not even record it
        async with FailingStore(root / "failing") as store:
            await mark_needs_reauthorization(store, "crm", "refresh token refused")

    asyncio.run(unrecorded())
    return captured


def _capture_faults(root: Path, captured: Captured) -> None:
    with running_sandbox(rate_limit=0, daily_quota=0, token_rate_limit=0, activity_delay=0) as sb:
        home = _connected(sb, root / "faults-home")
        services = _services(sb, home)
        mapping = {"email": "PrimaryEmail"}
        sb.faults(import_failed={"rate": 1, "count": 1})  # the first import fails
        some = ExportDefinition(list_ids=(sb.create_list(),), mapping=mapping, name="some")
        _run(captured, "with_errors", services, _sample(root / "some"), some)
        sb.faults(import_failed={"rate": 1, "count": 100})  # every import fails
        none = ExportDefinition(list_ids=(sb.create_list(),), mapping=mapping, name="none")
        _run(captured, "failed", services, _sample(root / "none"), none)
    quota = {"daily_quota": 3, "client_id": f"alerts-quota-{time.time_ns()}"}
    with running_sandbox(rate_limit=0, activity_delay=0, token_rate_limit=0, **quota) as sb:
        home = _connected(sb, root / "quota-home")
        out = ExportDefinition(list_ids=(sb.create_list(),), mapping={"email": "PrimaryEmail"},
                               name="quota")  # fmt: skip
        _run(captured, "quota", _services(sb, home), _sample(root / "quota"), out, upload_window=2)


@pytest.fixture(scope="module")
def captured(sandbox: RunningSandbox, tmp_path_factory: pytest.TempPathFactory) -> Captured:
    root = tmp_path_factory.mktemp("alerts")
    traces = Traces()
    logger = logging.getLogger()
    level = logger.level
    logger.addHandler(traces)
    logger.setLevel(logging.INFO)  # the Functions worker forwards INFO and above
    try:
        found = _capture(sandbox, root, traces)
        _capture_faults(root, found)
    finally:
        logger.removeHandler(traces)
        logger.setLevel(level)
    return found


# --- the queries deployed are the ones the rules give ---------------------------------------


def test_alert_queries_json_is_what_the_rules_give() -> None:
    assert QUERIES.read_text(encoding="utf-8") == alerts.queries_json(), (
        "infra/core/alert-queries.json is out of date: "
        "python -m shared.runs.alerts > infra/core/alert-queries.json"
    )


def test_the_record_columns_are_the_outcome_records_fields() -> None:
    report: dict[str, Any] = {"counts": {}, "changes": {}, "requests": {}}
    assert list(alerts.RECORD_COLUMNS) == list(run_finished(report))


def test_every_query_reads_the_message_the_record_is_written_with() -> None:
    for alert in alerts.RULES:
        query = alerts.kql(alert)
        if alert.source is alerts.Source.RUN_FINISHED:
            assert f'startswith_cs "{RUN_FINISHED} {{"' in query
            assert f"substring(message, {len(RUN_FINISHED) + 1})" in query
        for name in alert.dimensions:
            assert name in query.splitlines()[-1]  # the projection keeps what it splits by


# --- each rule over the captured records -----------------------------------------------------


def fired(
    captured: Captured,
    key: str,
    *,
    rows: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
    **params: Any,
) -> set[str]:
    """The scenarios whose run a rule selects (for the reconnect rule: the connections)."""
    alert = alerts.rule(key)
    bound = {**alerts.DEFAULT_PARAMETERS, **params}
    found = alerts.select(
        alert,
        captured.rows if rows is None else rows,
        params=bound,
        now=now or datetime.now(UTC),
    )
    if "RunId" not in (alert.dimensions + alert.show):
        return {str(row[alert.dimensions[0]]) for row in found}
    by_run: dict[str, str] = {}
    for scenario, run_id in captured.runs.items():
        by_run.setdefault(run_id, scenario)  # the confirmed run is the waiting one, again
    return {by_run.get(str(row["RunId"]), str(row["RunId"])) for row in found}


def test_the_runs_ended_as_each_scenario_means(captured: Captured) -> None:
    assert captured.outcomes == {
        "completed": "completed",
        "few_rejects": "completed",
        "many_rejects": "completed",
        "stopped": "stopped",
        "mirror_first": "completed",
        "waiting": "needs_confirmation",
        "confirmed": "completed",
        "reconnect": "failed",
        "with_errors": "completed_with_errors",
        "failed": "failed",
        "quota": "quota_exhausted",
    }
    finished = [r for r in captured.rows if r["message"].startswith(RUN_FINISHED)]
    assert len(finished) == len(captured.outcomes)  # one record per run, the confirmed twice


def test_a_failed_stopped_or_partly_delivered_run_alerts(captured: Captured) -> None:
    # The quota's own rule speaks for a run the quota stopped (it resumes by itself), and
    # a run waiting for confirmation sent nothing by design.
    assert fired(captured, "runFailed") == {"with_errors", "failed", "stopped", "reconnect"}


def test_rejects_above_the_share_alert_with_a_per_export_threshold(captured: Captured) -> None:
    assert fired(captured, "rejectsAboveShare") == {"many_rejects"}  # 25 % > 5 %; 2 % is not
    assert fired(captured, "rejectsAboveShare", RejectPercentByExport={"many": 30}) == set()
    assert fired(captured, "rejectsAboveShare", RejectPercentByExport={"few": 1}) == {
        "many_rejects",
        "few_rejects",
    }
    assert fired(captured, "rejectsAboveShare", RejectPercentDefault=1) == {
        "many_rejects",
        "few_rejects",
    }


def test_a_connection_that_needs_reconnecting_alerts_once_per_connection(
    captured: Captured,
) -> None:
    assert fired(captured, "connectionNeedsReconnect") == {"default", "crm"}
    alert = alerts.rule("connectionNeedsReconnect")
    params = alerts.DEFAULT_PARAMETERS
    found = alerts.select(alert, captured.rows, params=params, now=datetime.now(UTC))
    assert sorted(row["Connection"] for row in found) == ["crm", "default"]


def test_an_exhausted_daily_quota_alerts(captured: Captured) -> None:
    assert fired(captured, "quotaExhausted") == {"quota"}


def test_a_run_waiting_for_confirmation_alerts_after_the_wait_until_confirmed(
    captured: Captured,
) -> None:
    waiting = captured.rows[: captured.waiting]
    soon = datetime.now(UTC) + timedelta(hours=1)
    later = datetime.now(UTC) + timedelta(hours=25)
    assert fired(captured, "confirmationWaiting", rows=waiting, now=soon) == set()
    assert fired(captured, "confirmationWaiting", rows=waiting, now=later) == {"waiting"}
    shorter = {"ConfirmationWait": timedelta(minutes=30)}
    assert fired(captured, "confirmationWaiting", rows=waiting, now=soon, **shorter) == {"waiting"}
    # Confirmed: the same run id finished again, so its last record is no longer waiting.
    assert fired(captured, "confirmationWaiting", now=later) == set()


def test_function_errors_alert_on_failed_invocations_only() -> None:
    now = datetime.now(UTC)
    requests = [
        {"timestamp": now, "name": "upload_chunk", "success": False, "resultCode": "0",
         "operation_Id": "a"},
        {"timestamp": now, "name": "export_runs", "success": True, "resultCode": "400",
         "operation_Id": "b"},
        {"timestamp": now, "name": "scheduled_refresh", "success": True, "resultCode": "0",
         "operation_Id": "c"},
    ]  # fmt: skip
    alert = alerts.rule("functionErrors")
    found = alerts.select(alert, requests, params=alerts.DEFAULT_PARAMETERS, now=now)
    assert [row["FunctionName"] for row in found] == ["upload_chunk"]
    assert alerts.kql(alert).startswith("requests\n")


def test_the_records_carry_no_personal_data(captured: Captured) -> None:
    finished = [r["message"] for r in captured.rows if r["message"].startswith(RUN_FINISHED)]
    assert finished
    assert not any("@" in message for message in finished)
    assert json.dumps(alerts.queries()).count("@example") == 0
