"""Bad input, three ways in: ``ccexport prepare`` (a child process, with a timeout),
the app's orchestrator (``segment_export`` and its activities on the local engine, in
this process, against the sandbox), and ``ccexport run`` against the sandbox for a
few. Each case ends in a clear one-line error or in per-row rejects; never a
traceback, an "unexpected" error, a hang, or rows that vanish: for rejects,
``rows_read`` equals what a strict CSV reader counts, or a reject says why (an
unbalanced quote that swallowed rows names the lines it swallowed). No email address
is in anything but rejects.csv: not an error, a summary, a report, a log line, nor
anything Durable keeps of the run (its whole history and every custom status).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared.exports.definitions import ExportDefinition
from shared.runs.activities import RunActivities
from shared.runs.contract import ORCHESTRATOR, RunInput, RunOptions
from shared.runs.prepared import PreparedRun
from shared.workstation import cli
from shared.workstation.durable_context import DurableContext
from shared.workstation.local_engine import RunState, RuntimeStatus
from shared.workstation.local_run import app_engine
from tests.chaos.figures import FIGURES
from tests.chaos.promises import connect_locally, env_for, services_for
from tests.chaos.scale import SCALE
from tests.chaos.segment import model_json
from tests.support.ctct_support import run_cli
from tests.support.sandbox_service import RunningSandbox

LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
HEADER = "Email,FirstName,LastName\r\n"
MAPPING = {"email": "Email", "first_name": "FirstName", "last_name": "LastName"}
TIMEOUT = 60.0
MB = 1024 * 1024
UNEXPECTED = re.compile(r"unexpected [A-Z]\w*(Error|Exception)\b")


def rows(n: int = 20) -> list[str]:
    return [f"a{i}@example.com,Ann,L{i}\r\n" for i in range(1, n + 1)]


def text(lines: list[str], header: bool = True) -> bytes:
    return ((HEADER if header else "") + "".join(lines)).encode("utf-8")


def changed(changes: dict[int, str], n: int = 20) -> list[str]:
    lines = rows(n)
    for index, line in changes.items():
        lines[index] = line
    return lines


@dataclass(frozen=True)
class Case:
    """One bad input: the files to write, and what must come of it."""

    name: str
    files: Callable[[], dict[str, bytes]]
    error: str | None = None
    """A piece of the one-line error; None when the input is read with rejects."""
    rows_read: int | None = None
    contacts: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    source: str = "segment.csv"
    extra: tuple[str, ...] = ()
    """More ``ccexport prepare`` arguments."""
    strict_count: bool = True
    """rows_read must equal a strict reader's count (False: a reject says why not)."""


def _customer_insights(columns: tuple[str, ...], data: bytes) -> dict[str, bytes]:
    """A Customer Insights run folder (no header rows) described by a model.json."""
    return {
        "ChaosExport/model.json": model_json(columns, 1),
        "ChaosExport/ChaosSegment/2026/11/28/0930/ChaosSegment_1.csv": data,
    }


def _big_over_limit() -> dict[str, bytes]:
    """An unclosed quote early in a file with more than the 16 MB a value may hold
    after it: reading stops, naming the line where the runaway value began, instead of
    holding the rest of the file in one string. At full scale 105,000 rows of 180 bytes
    follow the quote; at small scale 5 rows of 4 MiB, as many bytes in fewer lines:
    the reader joins block after block to the open value just the same (5 times rather
    than 33), without re-reading 90,000 lines for rows swallowed each time (10 s a way
    in, against 1)."""
    tail = "L" * SCALE.runaway_line_bytes
    count = 18 * MB // (SCALE.runaway_line_bytes + 30) + 1  # 18 MB of rows or more
    lines = [f"a{i}@example.com,Ann,{tail}{i}\r\n" for i in range(1, count + 3)]
    lines[:3] = ["a1@example.com,Ann,L1\r\n", "a2@example.com,Ann,L2\r\n",
                 'a3@example.com,"Ann,L3\r\n']  # fmt: skip
    return {"segment.csv": text(lines)}


CASES = [
    Case("unbalanced_quote_to_the_end", lambda: {"segment.csv": text(changed(
        {5: 'a6@example.com,Ann,"L6\r\n'}))}, rows_read=6, contacts=5,
        reasons={"unbalanced_quote": 1}, strict_count=False),
    Case("unbalanced_quote_closed_later", lambda: {"segment.csv": text(changed(
        {5: 'a6@example.com,"Ann,L6\r\n', 12: 'a13@example.com,Ann",L13\r\n'}))},
        rows_read=13, contacts=12, reasons={"unbalanced_quote": 1}),
    Case("quoted_line_breaks_are_not_unbalanced", lambda: {"segment.csv": text(changed(
        {3: 'a4@example.com,"Ann\r\nMarie",L4\r\n', 4: 'a5@example.com,Ann,"x, y\r\nz, w"\r\n'}))},
        rows_read=20, contacts=20),
    Case("ragged_rows", lambda: {"segment.csv": text(changed(
        {3: "a4@example.com,Ann,L4,extra\r\n", 4: "a5@example.com\r\n"}))},
        rows_read=20, contacts=18, reasons={"ragged_row": 2}),
    Case("cp1252_bytes_in_utf8", lambda: {"segment.csv": text(rows()[:2])
         + "a3@example.com,Zoë Müller,L3\r\n".encode("cp1252")},
         error="cannot decode line 4 as UTF-8"),
    Case("utf16_without_bom", lambda: {"segment.csv": text(rows()).decode().encode("utf-16-le")},
         error="UTF-16 without a byte-order mark"),
    Case("utf16be_without_bom", lambda: {"segment.csv": text(rows()).decode().encode("utf-16-be")},
         error="UTF-16 without a byte-order mark"),
    Case("invalid_bytes", lambda: {"segment.csv": text(rows()[:7])
         + b"a8@example.com,\xff\xfe,L8\r\n"},
         error="cannot decode line 9 as UTF-8"),
    Case("nul_bytes", lambda: {"segment.csv": text(changed(
        {7: "a8@example.com,An\x00n,L8\r\n", 8: "a9@exam\x00ple.com,Ann,L9\r\n"}))},
        rows_read=20, contacts=18, reasons={"nul_character": 2}),
    Case("ten_megabyte_name", lambda: {"segment.csv": text(changed(
        {9: "a10@example.com," + "x" * (10 * MB) + ",L10\r\n"}))}, rows_read=20, contacts=20),
    Case("ten_megabyte_quoted_email", lambda: {"segment.csv": text(changed(
        {9: '"' + "y" * (10 * MB) + '@example.com",Ann,L10\r\n'}))},
        rows_read=20, contacts=19, reasons={"email_too_long": 1}),
    Case("formula_names", lambda: {"segment.csv": text(changed(
        {1: 'a2@example.com,"=HYPERLINK(""http://evil.example"",""x"")",L2\r\n',
         2: "=cmd|' /C calc'!A0,+Ann,-L3\r\n", 3: "a4@example.com,@SUM(A1),-2+3\r\n"}))},
        rows_read=20, contacts=19, reasons={"invalid_email": 1}),
    Case("unicode_emails", lambda: {"segment.csv": text(changed(
        {1: "zoë@exämple.com,Ann,L2\r\n", 2: "user@xn--exmple-cua.com,Ann,L3\r\n",
         3: "ünï@example.com,A,B\r\n", 4: "用户@例子.广告,A,B\r\n"}))},
        rows_read=20, contacts=17, reasons={"non_ascii_email": 3}),
    Case("empty_file", lambda: {"segment.csv": b""}, rows_read=0, contacts=0),
    Case("header_only", lambda: {"segment.csv": HEADER.encode()}, rows_read=0, contacts=0),
    Case("over_the_profile_limit", lambda: {"segment.csv": text(rows(30))},
         error="more than 10 profiles, its limit", extra=("--max-profiles", "10")),
    Case("model_json_with_other_columns", lambda: _customer_insights(
        ("Email", "FirstName", "LastName", "Phone"), text(rows(), header=False)),
        error="has 3 columns but", source="ChaosExport/ChaosSegment"),
    Case("model_json_without_the_mapped_column", lambda: _customer_insights(
        ("Mail", "FirstName", "LastName"), text(rows(), header=False)),
        error='column "Email" (mapped to email) is not in the file',
        source="ChaosExport/ChaosSegment"),
    Case("model_json_not_json", lambda: {**_customer_insights(
        ("Email", "FirstName", "LastName"), text(rows(), header=False)),
        "ChaosExport/model.json": b'{"name": "ChaosExport", "entities": ['},
        error="is not valid JSON", source="ChaosExport/ChaosSegment"),
    Case("gzip_cut_short", lambda: {"segment.csv.gz": gzip.compress(text(rows(2000)))[:3000]},
         error="the gzip file is damaged or cut short", source="segment.csv.gz"),
]  # fmt: skip


def _across_blocks() -> dict[str, bytes]:
    """60,000 rows (about 1.7 MB: two blocks, two worker processes); a quote opens in
    row 39,000, near the end of the first block, and closes in row 41,000."""
    lines = changed(
        {38_999: 'a39000@example.com,"Ann,L\r\n', 40_999: 'a41000@example.com,Ann",L\r\n'},
        n=60_000,
    )
    return {"segment.csv": text(lines)}


CASES.append(
    Case(
        "unbalanced_quote_across_blocks",
        _across_blocks,
        rows_read=58_000,
        contacts=57_999,
        reasons={"unbalanced_quote": 1},
    )
)
CASES.append(Case("unbalanced_quote_past_the_field_limit", _big_over_limit,
                  error="line 4: field larger than field limit"))  # fmt: skip

KINDS: dict[str, tuple[str, ...]] = {
    "unbalanced and quoted line breaks": ("unbalanced_quote_closed_later",
        "unbalanced_quote_to_the_end", "quoted_line_breaks_are_not_unbalanced",
        "unbalanced_quote_across_blocks"),
    "a runaway value past the 16 MB field limit": ("unbalanced_quote_past_the_field_limit",),
    "ragged rows": ("ragged_rows",),
    "wrong encodings": ("utf16_without_bom", "utf16be_without_bom", "cp1252_bytes_in_utf8",
        "invalid_bytes"),
    "NUL bytes": ("nul_bytes",),
    "a 10 MB field": ("ten_megabyte_name", "ten_megabyte_quoted_email"),
    "formulas": ("formula_names",),
    "non-ASCII addresses": ("unicode_emails",),
    "empty files": ("empty_file", "header_only"),
    "too many rows": ("over_the_profile_limit",),
    "a model.json that does not match": ("model_json_with_other_columns",
        "model_json_without_the_mapped_column", "model_json_not_json"),
    "a damaged gzip file": ("gzip_cut_short",),
}  # fmt: skip
"""Every case by the kind of bad input it is. ``make test`` sends the first of each
kind through ``ccexport run`` (a process each, about a second); ``make chaos`` all."""


def write(case: Case, folder: Path) -> Path:
    for name, data in case.files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder / case.source


def strict_records(source: Path) -> int | None:
    """Records a strict reader sees in a headered UTF-8 CSV; None if it refuses the file."""
    try:
        data = source.read_bytes().decode("utf-8")
        reader = csv.reader(io.StringIO(data, newline=""), strict=True)
        return max(0, sum(1 for values in reader if values) - 1)
    except (UnicodeDecodeError, csv.Error):
        return None


def one_line_error(stderr: str, piece: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith("ccexport: error: ")
    assert piece in lines[0]
    assert not UNEXPECTED.search(lines[0]), "an error the code did not expect"


def prepare_command(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """``ccexport prepare``: a child process at full scale; in this process (a thread,
    with the same timeout) at small scale, where a process start per case would cost
    more than the case."""
    if SCALE.name == "full":
        try:
            done = run_cli(args, cli_env_plain(tmp_path), timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ccexport {' '.join(args[:2])} hung (> {TIMEOUT:g} s)")
        return done.returncode, done.stdout, done.stderr
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []
    failure: list[BaseException] = []

    def call() -> None:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                result.append(cli.main(args))
        except BaseException as exc:  # a crash: the test shows it
            failure.append(exc)

    thread = threading.Thread(target=call, name="ccexport-prepare", daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"ccexport {' '.join(args[:2])} hung (> {TIMEOUT:g} s)")
    if failure:
        raise failure[0]
    return result[0], out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_ccexport_prepare(case: Case, tmp_path: Path) -> None:
    source = write(case, tmp_path / "in")
    out = tmp_path / "out"
    maps = [a for column in MAPPING.items() for a in ("--map", "=".join(column))]
    args = ["prepare", str(source), "--list-id", LIST, *maps, "--out", str(out), "--json",
            *case.extra]  # fmt: skip
    code, stdout, stderr = prepare_command(args, tmp_path)
    FIGURES.bad_input(f"prepare:{case.name}")
    assert "Traceback" not in stderr
    no_email_address(stderr, stdout, *(p.read_text() for p in out.glob("summary.json")))
    if case.error is not None:
        assert code == 2, stderr
        one_line_error(stderr, case.error)
        assert not (out / "summary.json").exists()  # nothing half-written to send
        return
    assert code == 0, stderr
    assert stderr == ""
    summary = json.loads(stdout)
    check_counts(summary, case, source)
    rejects = list(csv.DictReader(io.StringIO((out / "rejects.csv").read_text("utf-8"))))
    assert len(rejects) == summary["rejected"] + summary["duplicates"]
    for reject in rejects:
        for cell in reject.values():
            assert not cell.startswith(("=", "+", "-", "@")), "a formula cell in rejects.csv"
    if case.name == "formula_names":
        assert [r["email"] for r in rejects] == ["'=cmd|' /C calc'!A0"]
        FIGURES.security("rejects.csv neutralises a formula in a rejected row")
    if case.name == "unbalanced_quote_closed_later":
        [reject] = rejects
        assert (reject["line"], reject["reason"]) == ("7", "unbalanced_quote")
        assert reject["detail"].startswith("lines 7-14 were read as one record")


def no_email_address(*texts: str) -> None:
    """Email addresses appear only in rejects.csv: never in an error, a summary, a
    report, Durable's history or a log line, whatever the input held."""
    for text in texts:
        assert "@" not in text, text[:300]


def cli_env_plain(tmp_path: Path) -> dict[str, str]:
    """A ``ccexport`` environment without any service: prepare needs none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTCT_", "CCEXPORT_"))}
    env["CCEXPORT_HOME"] = str(tmp_path / "home")
    return env


def check_counts(summary: dict[str, Any], case: Case, source: Path) -> None:
    counts = (summary["rows_read"], summary["contacts"], summary["reject_reasons"])
    assert counts == (case.rows_read, case.contacts, case.reasons)
    assert summary["rows_read"] == (
        summary["contacts"] + summary["rejected"] + summary["duplicates"]
    )
    strict = strict_records(source) if source.suffix == ".csv" else None
    if case.strict_count:
        assert summary["rows_read"] == strict, "rows_read is not what a strict reader sees"
    else:
        assert strict != summary["rows_read"]
        assert "unbalanced_quote" in summary["reject_reasons"], "rows vanished without a reason"


@dataclass(frozen=True)
class Orchestrated:
    """One run of the app's orchestrator on the local engine, as Durable keeps it."""

    state: RunState
    history: list[dict[str, Any]]
    """Every event: the run's input, each activity's input and result (or failure),
    timers, and the orchestrator's output."""
    statuses: list[Any]
    """Every custom status the orchestrator set, replays included."""

    def activity(self, name: str) -> tuple[Any, Any]:
        """The input and the result of the one call of activity ``name``."""
        [scheduled] = [e for e in self.history if e.get("name") == name and "input" in e]
        [done] = [e for e in self.history if e.get("task_scheduled_id") == scheduled["event_id"]]
        assert "result" in done, done  # completed, not failed
        return json.loads(scheduled["input"]), json.loads(done["result"])


def orchestrated(
    run: RunInput, activities: RunActivities, monkeypatch: pytest.MonkeyPatch
) -> Orchestrated:
    """``run`` through functions/orchestrator.py's segment_export on the local engine
    (as ``ccexport run`` runs it, in this process), every custom status recorded."""
    statuses: list[Any] = []
    setter = DurableContext.set_custom_status

    def recorded(context: DurableContext, status: Any) -> None:
        statuses.append(status)
        setter(context, status)

    monkeypatch.setattr(DurableContext, "set_custom_status", recorded)
    engine = app_engine(activity_concurrency=run.options.upload_window + 1, activities=activities)
    engine.on_close(activities.aclose)
    with engine:
        started = engine.start(ORCHESTRATOR, run.to_json(), instance_id=run.run_id)
        state = engine.wait(started.instance_id, TIMEOUT)
        events = engine.client.get_orchestration_history(started.instance_id)
    return Orchestrated(state, [event.to_dict() for event in events], statuses)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_orchestrated_run(
    case: Case,
    chaos_sandbox: RunningSandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app's orchestrator and activities in this process: the prepare activity's
    counts, or its error as a result (never raised), and the run ends with the good
    rows sent or failed with that error; nothing Durable keeps of the run (its input,
    every activity's input and result, every custom status, its output), nor its
    report or any log line, holds an email address."""
    source = write(case, tmp_path / "in")
    home = tmp_path / "home"
    connect_locally(chaos_sandbox, home)
    env = env_for(chaos_sandbox, home, None)
    max_profiles = int(case.extra[1]) if case.extra else 1_000_000
    export = ExportDefinition(list_ids=(chaos_sandbox.create_list(),), mapping=MAPPING,
                              name="bad", max_profiles=max_profiles)  # fmt: skip
    run = RunInput("bad-input-" + case.name.replace("_", "-"), export.to_json(), str(source),
                   options=RunOptions(max_body_bytes=400_000, poll_seconds=0.2))  # fmt: skip
    activities = RunActivities(services_for(env))
    with caplog.at_level(logging.DEBUG):
        done = orchestrated(run, activities, monkeypatch)
    FIGURES.bad_input(f"orchestrator:{case.name}")
    FIGURES.run()
    assert done.state.status is RuntimeStatus.COMPLETED, done.state.failure
    assert done.statuses
    assert done.statuses[-1] == done.state.custom_status
    report = activities.services.runs.read_report(run.run_id)
    assert report is not None
    no_email_address(
        json.dumps(done.history, default=str),
        json.dumps(done.statuses),
        json.dumps(done.state.custom_status),
        json.dumps(done.state.output),
        json.dumps(report),
        caplog.text,
    )
    activity_input, output = done.activity("prepare_segment")
    assert activity_input == run.to_json()
    prepared = PreparedRun.from_json(output)
    outcome = done.state.output
    if case.error is not None:
        assert prepared.error is not None
        assert case.error in prepared.error
        assert prepared.chunks == ()
        assert outcome["status"] == "failed"
        return
    assert prepared.error is None
    assert (prepared.rows_read, prepared.contacts, dict(prepared.reject_reasons)) == (
        case.rows_read, case.contacts, case.reasons)  # fmt: skip
    assert sum(c.contacts for c in prepared.chunks) == prepared.contacts
    assert outcome["status"] == "completed", outcome


RUN_CASES = tuple(names[0] for names in KINDS.values())


def test_every_case_is_of_a_kind() -> None:
    """So a new case (or kind) cannot slip out of the ``ccexport run`` cases of make test."""
    kinds = [name for names in KINDS.values() for name in names]
    assert sorted(kinds) == sorted(case.name for case in CASES)


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if SCALE.name == "full" or c.name in RUN_CASES],
    ids=lambda c: c.name,
)
def test_ccexport_run(case: Case, chaos_sandbox: RunningSandbox, tmp_path: Path) -> None:
    """The whole run on bad input: a failed run with its reason, or the good rows sent."""
    source = write(case, tmp_path / "in")
    home = tmp_path / "home"
    connect_locally(chaos_sandbox, home)
    list_id = chaos_sandbox.create_list()
    env = env_for(chaos_sandbox, home, None)
    maps = [a for column in MAPPING.items() for a in ("--map", "=".join(column))]
    args = ["run", str(source), "--list-id", list_id, *maps, "--json", "--poll-seconds", "0.2",
            *case.extra]  # fmt: skip
    try:
        done = run_cli(args, env, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ccexport run hung on {case.name} (> {TIMEOUT:g} s)")
    FIGURES.bad_input(f"run:{case.name}")
    FIGURES.run()
    assert "Traceback" not in done.stderr
    no_email_address(done.stdout, done.stderr)  # the report, and what the run logged
    assert done.stderr == ""
    report = json.loads(done.stdout)
    if case.error is not None:
        assert done.returncode == 1
        assert (report["status"], report["counts"]["contacts_sent"]) == ("failed", 0)
        assert case.error in report["error"]
        assert chaos_sandbox.members(list_id) == []
        return
    assert done.returncode == 0
    assert report["status"] == "completed"
    assert report["counts"]["rows_read"] == case.rows_read
    assert len(chaos_sandbox.members(list_id)) == case.contacts
