"""What `ccexport prepare` and `ccexport run` print for a person reads as text, never
as Python: no dicts, lists, tuples, None or object reprs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from shared.runs.report import counts_text
from tests.support.sandbox_service import RunningSandbox, cli_env

ROOT = Path(__file__).resolve().parent.parent
LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

# {'a': 1}, ['a'], (1, 2), {}, [], None, True, False, <X object at 0x...>, X(a=1)
PYTHON = re.compile(
    r"[{\[(]['\"]|['\"][}\])]|[{\[(]\d+(\.\d+)?, |\{\}|\[\]|\(\)"
    r"|\bNone\b|\bTrue\b|\bFalse\b|object at 0x|\b[A-Z]\w+\(\w+="
)


def assert_no_python(text: str) -> None:
    found = [line for line in text.splitlines() if PYTHON.search(line)]
    assert found == [], f"Python reprs in human output: {found}"


def write_segment(path: Path) -> None:
    """Six rows: two contacts, a duplicate, a bad address, a ragged row; a name too long
    and a birthday that is not a date."""
    path.write_text(
        "Email,FirstName,Birthday\n"
        f"ada@example.com,{'A' * 60},1815-12-10\n"
        "grace@example.com,Grace,not-a-date\n"
        "ADA@example.com,Ada,1815-12-10\n"
        "not-an-address,Bad,\n"
        "x@example.com,Too,Many,Fields\n"
    )


def ccexport(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.workstation.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def test_the_pattern_catches_reprs() -> None:
    for python in ("rejected 1 {'invalid_email': 1}", "['a.csv']", "None", "(1, 2)",
                   "<Foo object at 0x7f>", "Changes(added=1)"):  # fmt: skip
        assert PYTHON.search(python), python
    for text in ("rejected 1  (1 invalid_email)", "list 3fa8 (Newsletter)", "[00:03, ETA ?]"):
        assert not PYTHON.search(text), text
    assert counts_text({"invalid_email": 2, "ragged_row": 1_200}) == (
        "2 invalid_email, 1,200 ragged_row"
    )


def test_prepare_summary_reads_as_text(tmp_path: Path, sandbox: RunningSandbox) -> None:
    source = tmp_path / "segment.csv"
    write_segment(source)
    env = cli_env(sandbox, tmp_path / "home")
    result = ccexport(
        ["prepare", str(source), "--list-id", LIST_ID, "--map", "email=Email",
         "--map", "first_name=FirstName", "--map", "birthday=Birthday",
         "--out", str(tmp_path / "out")],
        env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_no_python(out)
    assert re.search(r"^  rejected +2  \(1 invalid_email, 1 ragged_row\)$", out, re.M), out
    assert re.search(r"^  duplicates +1$", out, re.M), out
    assert re.search(r"^  truncated +1  .*\(1 first_name\)$", out, re.M), out
    assert re.search(r"^  invalid +1  .*\(1 birthday\)$", out, re.M), out


def test_run_report_reads_as_text(tmp_path: Path, sandbox: RunningSandbox) -> None:
    source = tmp_path / "segment.csv"
    write_segment(source)
    list_id = sandbox.create_list()
    env = cli_env(sandbox, tmp_path / "home")
    connected = ccexport(["connect", "--auto", "--port", "0"], env)
    assert connected.returncode == 0, connected.stderr
    assert_no_python(connected.stdout)
    checked = ccexport(["check", "--list-id", list_id], env)
    assert checked.returncode == 0, checked.stderr
    assert_no_python(checked.stdout)

    done = ccexport(
        ["run", str(source), "--list-id", list_id, "--map", "email=Email",
         "--map", "first_name=FirstName", "--poll-seconds", "0.2"],
        env,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert_no_python(done.stdout)
    assert "(duplicates 1; rejected 2: 1 invalid_email, 1 ragged_row)" in done.stdout
    assert re.search(r"^  delivered +2 ", done.stdout, re.M), done.stdout
    assert done.stderr == ""  # not a terminal: no bar
