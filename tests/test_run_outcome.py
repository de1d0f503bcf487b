"""Every run leaves one outcome record, ``run finished``, with its ids, outcome,
counts and duration and no personal data; under ``CCEXPORT_LOG_FORMAT=json`` the
command line writes it (and every other record) as one JSON object per line. Its
message carries the same fields as JSON after the words ``run finished``: the message
is all of a record that reaches Application Insights from the Functions worker."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

from bench.sample import EXPORT, RUN, TABLE, write_sample
from shared.runs.outcome import FIELDS, RUN_FINISHED, fields_of, log_run_finished, run_finished
from shared.secrets.store import LocalFileSecretStore
from shared.workstation import logs
from tests.chaos.promises import store_tokens
from tests.support.ctct_support import run_cli
from tests.support.sandbox_service import RunningSandbox, cli_env

REPORT = {
    "run_id": "high-value-20261128t094500z-3f2a9c",
    "status": "completed_with_errors",
    "export": "high-value",
    "connection": "acme",
    "trigger": "blob",
    "started_at": "2026-11-28T09:45:00Z",
    "finished_at": "2026-11-28T09:47:30.5Z",
    "error": None,
    "counts": {
        "rows_read": 1000, "contacts": 980, "duplicates": 5, "rejected": 15,
        "contacts_delivered": 900, "contacts_not_delivered": 40, "contacts_unconfirmed": 10,
        "contacts_unchanged": 30,
    },
    "changes": {"removed": 7},
    "requests": {"import_requests": 3, "poll_requests": 4},
}  # fmt: skip


def test_the_record_holds_ids_outcome_counts_and_duration() -> None:
    assert run_finished(REPORT) == {
        "event": "run_finished",
        "run_id": REPORT["run_id"],
        "export": "high-value",
        "connection": "acme",
        "trigger": "blob",
        "outcome": "completed_with_errors",
        "duration_seconds": 150.5,
        "rows_read": 1000,
        "contacts": 980,
        "delivered": 900,
        "not_delivered": 40,
        "unconfirmed": 10,
        "unchanged": 30,
        "rejected": 15,
        "duplicates": 5,
        "removed": 7,
        "requests": 7,
        "error": None,
    }


def test_a_json_line_carries_the_fields_and_names_an_exception_by_type_only() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonLines())
    log = logging.getLogger("tests.outcome")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        fields = log_run_finished(log, REPORT)
        try:
            raise ValueError("ana@example.com is not allowed")  # a message quoting data
        except ValueError:
            log.exception("something failed")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"].startswith(f"{RUN_FINISHED} {{")
    assert fields_of(first["message"]) == fields  # the message alone carries every field
    assert first["level"] == "info"
    assert {k: first[k] for k in fields} == fields
    assert second["exception"] == "ValueError"
    assert "@" not in out.getvalue()
    assert FIELDS not in first


def test_a_run_whose_imports_all_fail_ends_non_zero_with_one_json_outcome_line(
    sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(rate_limit=0, activity_delay=0)
    home = tmp_path / "home"
    write_sample(tmp_path / "sample", 300, parts=1, bad_every=50, duplicate_every=0)
    list_id = sandbox.create_list()
    store_tokens(sandbox, LocalFileSecretStore(home))
    sandbox.faults(import_failed={"rate": 1, "count": 100})  # every import fails
    env = cli_env(sandbox, home, CCEXPORT_LOG_FORMAT="json")
    args = ["run", str(tmp_path / "sample" / EXPORT / TABLE / RUN), "--list-id", list_id,
            "--map", "email=PrimaryEmail", "--poll-seconds", "0.2"]  # fmt: skip

    done = run_cli(args, env, timeout=120)

    assert done.returncode != 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert all(isinstance(line, dict) for line in lines)
    finished = [line for line in lines if line["message"].startswith(RUN_FINISHED)]
    assert len(finished) == 1, done.stderr[-2000:]
    record = finished[0]
    assert fields_of(record["message"]) == {k: record[k] for k in run_finished(REPORT)}
    assert record["outcome"] == "failed"
    assert record["trigger"] == "cli"
    assert record["delivered"] == 0
    assert record["not_delivered"] == record["contacts"] > 0
    assert record["rejected"] == 300 // 50
    assert "@" not in done.stderr


def test_the_message_is_read_back_only_from_a_run_finished_line() -> None:
    fields = run_finished(REPORT)
    out = io.StringIO()
    handler = logging.StreamHandler(out)  # the bare message, as the Functions worker sends it
    log = logging.getLogger("tests.outcome.message")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log_run_finished(log, REPORT)
    finally:
        log.removeHandler(handler)
    message = out.getvalue().rstrip("\n")
    assert message.startswith(f"{RUN_FINISHED} {{")
    assert "\n" not in message  # one line: a trace row, one JSON line
    assert fields_of(message) == fields
    assert fields_of("run finished") is None
    assert fields_of("run finished {not json") is None
    assert fields_of('run finished ["a list"]') is None
    assert fields_of('a run finished {"outcome": "failed"}') is None
