"""``make mutate``: mutmut over the core modules, then the kill rate per module and the
survivors, last.

    python -m tests.mutation [--max-children N] [--rev REV] [--diffs] [MODULE ...]

MODULE is a name of ``SCOPE`` below (all of them when none is given). mutmut runs
niced (``nice -n 10``) with at most ``--max-children`` test processes (2 by default),
its output goes to mutants/mutate.log, and every selected mutant is tested again (the
test-to-function map is collected afresh each time). ``--rev REV`` runs on a commit
instead of the working tree (``git archive`` into mutants/snapshots/at-<sha>/), for
figures that others' unfinished edits cannot move; ``--report-only`` prints the last
results again. Survivors named in docs/MUTATION.md count
as documented; the exit status is 1 when a survivor is neither killed nor
documented, or the overall kill rate is under ``TARGET``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = ROOT / "mutants" / "snapshots"
DOC = ROOT / "docs" / "MUTATION.md"
TARGET = 0.90

# mutmut's names: "<module>.x_<function>__mutmut_<n>" for functions and
# "<module>.xǁ<Class>ǁ<method>__mutmut_<n>" for methods.
SEP = "\u01c1"


def method(cls: str, name: str) -> str:
    return f"x{SEP}{cls}{SEP}{name}"


def function(name: str) -> str:
    return f"x_{name}"


@dataclass(frozen=True)
class Module:
    """One row of the table: a file, and which of its functions are in scope."""

    path: str
    functions: tuple[str, ...] = ("*",)  # mangled function names, fnmatch patterns
    why: str = ""

    @property
    def dotted(self) -> str:
        return self.path.removesuffix(".py").replace("/", ".")

    def globs(self) -> list[str]:
        return [f"{self.dotted}.{f}__mutmut_*" for f in self.functions]

    def covers(self, mutant: str) -> bool:
        return any(fnmatch.fnmatchcase(mutant, g) for g in self.globs())


SCOPE: dict[str, Module] = {
    "chunks": Module("shared/prepare/chunks.py", why="packing request bodies (4 MB, 40,000)"),
    "contacts": Module(
        "shared/constant_contact/contacts.py", why="row -> contact rules, email checks"
    ),
    "seen_keys": Module("shared/prepare/seen_keys.py", why="duplicate email keys across blocks"),
    "block_workers": Module("shared/prepare/workers.py", why="the prepare router"),
    "plain_blocks": Module("shared/prepare/plain.py", why="which blocks take the fast path"),
    "outputs": Module("shared/prepare/outputs.py", why="bodies, rejects.csv, whole or nothing"),
    "run_report": Module("shared/runs/report.py", why="reconciliation and mismatches"),
    "mirror": Module("shared/runs/mirror.py", why="mirror planning"),
    "mirror_share": Module(
        "shared/runs/membership.py",
        (method("ListPlan", "share"),),
        why="the share of a list a mirror run would remove",
    ),
    "mirror_stop": Module(
        "shared/runs/bookkeeping.py",
        (
            method("RunTally", "mirror"),
            method("RunTally", "needs_members"),
            method("RunTally", "check_empty_segment"),
            method("RunTally", "members_found"),
            method("RunTally", "awaits_confirmation"),
            method("RunTally", "removals_due"),
        ),
        why="mirror mode's safety stop (shared/runs/bookkeeping.py RunTally)",
    ),
    "retry": Module(
        "shared/constant_contact/transport.py",
        (
            method("RetryPolicy", "delay"),
            method("Transport", "_request"),
            method("Transport", "_after_refusal"),
            method("Transport", "_transient"),
            function("_error_items"),
            function("error_key"),
        ),
        why="the client's retry decisions",
    ),
    "pacing": Module(
        "shared/constant_contact/pacing.py", why="4 requests/s and the daily quota, per key"
    ),
    "token_bundle": Module(
        "shared/constant_contact/oauth.py",
        (method("TokenBundle", "fresh"),),
        why="when a stored token is fresh enough to use",
    ),
    "tokens": Module(
        "shared/constant_contact/tokens.py",
        (
            method("TokenManager", "_fresh"),
            method("TokenManager", "access_token"),
            method("TokenManager", "_use"),
            method("TokenManager", "_refresh_under_lock"),
            method("TokenManager", "_load"),
        ),
        why="token refresh under the lock",
    ),
    "run_key": Module(
        "shared/segments/inbox.py",
        (function("run_key"), function("export_of_run")),
        why="the run id",
    ),
    "run_starts": Module(
        "shared/runs/launcher.py",
        (
            function("run_input"),
            method("Launcher", "start"),
            method("Launcher", "_start_or_log"),
            method("Launcher", "run_now"),
        ),
        why="each run started at most once",
    ),
    "principal": Module("functions/principal.py", why="who is calling, from the sign-in"),
    "access": Module("shared/exports/access.py", why="role checks of the HTTP API"),
}

KILLED = {1: "killed", 3: "killed"}
TIMEOUTS = {36, 24, -24, 152, 255, -9}  # mutmut's timeouts; -9: SIGKILL past the CPU limit
SURVIVED = 0
NO_TESTS = {5, 33}


@dataclass
class Row:
    name: str
    module: Module
    total: int = 0
    killed: int = 0
    timeouts: int = 0
    survivors: list[str] = field(default_factory=list)
    no_tests: list[str] = field(default_factory=list)
    suspicious: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def not_killed(self) -> list[str]:
        return self.survivors + self.no_tests + self.suspicious

    @property
    def rate(self) -> float:
        checked = self.total - len(self.unchecked)
        return (self.killed + self.timeouts) / checked if checked else 1.0


def unselected_tests(tree: Path) -> list[str]:
    """tests/test_mutation_*.py files mutmut would not run (missing from pyproject.toml's
    ``pytest_add_cli_args_test_selection``)."""
    config = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["mutmut"]
    selected = set(config["pytest_add_cli_args_test_selection"])
    found = sorted(p.relative_to(tree).as_posix() for p in tree.glob("tests/test_mutation_*.py"))
    return [name for name in found if name not in selected]


def documented_names(doc: Path = DOC) -> set[str]:
    """Mutant names docs/MUTATION.md lists (in backquotes), each with its reason."""
    if not doc.exists():
        return set()
    return set(re.findall(r"`([\w.]+" + SEP + r"?[\w" + SEP + r"]*__mutmut_\d+)`", doc.read_text()))


def results(tree: Path, rows: Iterable[Row]) -> None:
    """Fill the rows from mutmut's per-file results (mutants/<path>.meta)."""
    for row in rows:
        meta = tree / "mutants" / (row.module.path + ".meta")
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        for mutant, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
            if not row.module.covers(mutant):
                continue
            row.total += 1
            if code is None:
                row.unchecked.append(mutant)
            elif code in KILLED:
                row.killed += 1
            elif code in TIMEOUTS:
                row.timeouts += 1
            elif code == SURVIVED:
                row.survivors.append(mutant)
            elif code in NO_TESTS:
                row.no_tests.append(mutant)
            else:
                row.suspicious.append(mutant)


def _natural(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("__mutmut_")
    return base, int(number) if number.isdigit() else 0


def table(rows: Sequence[Row], documented: set[str]) -> list[str]:
    """The figures: killed counts timeouts apart; the rate is (killed + timeouts) over
    the mutants that ran; "undoc." counts those not killed and not in docs/MUTATION.md."""
    head = (
        f"{'module':<14}{'file':<32}{'mutants':>8}{'killed':>7}{'timeout':>8}{'survived':>9}"
        f"{'no test':>8}{'suspic.':>8}{'not run':>8}{'rate':>8}{'undoc.':>7}"
    )
    lines = [head, "-" * len(head)]

    def line(label: str, what: str, group: Sequence[Row]) -> str:
        ran = sum(r.total - len(r.unchecked) for r in group)
        killed = sum(r.killed + r.timeouts for r in group)
        rate = f"{killed / ran:.1%}" if ran else "-"
        undocumented = sum(1 for r in group for m in r.not_killed if m not in documented)
        return (
            f"{label:<14}{what:<32}{sum(r.total for r in group):>8}"
            f"{sum(r.killed for r in group):>7}{sum(r.timeouts for r in group):>8}"
            f"{sum(len(r.survivors) for r in group):>9}{sum(len(r.no_tests) for r in group):>8}"
            f"{sum(len(r.suspicious) for r in group):>8}{sum(len(r.unchecked) for r in group):>8}"
            f"{rate:>8}{undocumented:>7}"
        )

    for r in rows:
        what = r.module.path if r.module.functions == ("*",) else f"{r.module.path} (part)"
        lines.append(line(r.name, what, [r]))
    lines.append("-" * len(head))
    lines.append(line("overall", "", rows))
    return lines


def diff(tree: Path, mutant: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # noqa: PLC0415 - dev tool
    from mutmut.utils.file_utils import change_cwd  # noqa: PLC0415

    try:
        with change_cwd(tree):
            text = get_diff_for_mutant(mutant, path=path)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        return f"    (no diff: {exc})"
    body = [line for line in text.splitlines() if not line.startswith(("---", "+++"))]
    return "\n".join(f"    {line}" for line in body)


def resolve(rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def snapshot_of(sha: str) -> Path:
    return SNAPSHOTS / f"at-{sha[:12]}"


def snapshot(sha: str) -> Path:
    """The tree of a commit in mutants/snapshots/at-<sha>/, made once (mutmut keeps its
    own mutants/ inside it). Snapshots of other commits are removed unless a run holds
    them."""
    tree = snapshot_of(sha)
    marker = tree / ".rev"
    if not marker.exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.Popen(["git", "archive", sha], cwd=ROOT, stdout=subprocess.PIPE)
        assert archive.stdout is not None
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            tar.extractall(tree, filter="data")
        if archive.wait() != 0:
            raise SystemExit(f"git archive {sha} failed")
        marker.write_text(sha + "\n")
    for other in SNAPSHOTS.glob("at-*"):
        if other != tree:
            with contextlib.suppress(BlockingIOError), held(other):
                shutil.rmtree(other, ignore_errors=True)
    return tree


@contextlib.contextmanager
def held(tree: Path) -> Iterator[None]:
    """One run at a time in a tree (the working tree or a snapshot): an flock on
    <tree>/mutants/.mutate.lock; raises BlockingIOError when another run holds it."""
    (tree / "mutants").mkdir(parents=True, exist_ok=True)
    fd = os.open(tree / "mutants" / ".mutate.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def run_mutmut(tree: Path, globs: list[str], max_children: int) -> tuple[int, float]:
    """Run mutmut niced in ``tree``; its output (a spinner, progress) goes to the log."""
    mutants = tree / "mutants"
    mutants.mkdir(exist_ok=True)
    log_path = mutants / "mutate.log"
    # The test-to-function map is collected afresh: tests change between runs.
    (mutants / "mutmut-stats.json").unlink(missing_ok=True)
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    cmd = ["nice", "-n", "10", mutmut, "run", "--max-children", str(max_children), *globs]
    start = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=tree, stdout=log, stderr=subprocess.STDOUT)
        printed = start
        while proc.poll() is None:
            time.sleep(5)
            if time.monotonic() - printed >= 60:
                printed = time.monotonic()
                status = _progress(log_path)
                if status:
                    print(f"  [{printed - start:5.0f}s] {status}", flush=True)
    return proc.returncode, time.monotonic() - start


def _progress(log_path: Path) -> str:
    """mutmut's last progress line (``done/total 🎉 killed ... 🙁 survived``)."""
    try:
        tail = log_path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    found = re.findall(r"\d+/\d+ [^\r\n⠀-⣿]*", tail)
    if found:
        return str(found[-1]).strip()
    steps = re.findall(r"(Generating mutants|Running stats|Running clean tests|forced fail)", tail)
    return str(steps[-1]) if steps else ""


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(SCOPE))
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--rev", help="run on this commit (git archive) instead of the tree")
    parser.add_argument("--diffs", action="store_true", help="print each survivor's diff")
    parser.add_argument(
        "--report-only", action="store_true", help="read the last results, run nothing"
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in SCOPE]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(SCOPE)}")
    names = list(args.modules) or list(SCOPE)
    rows = [Row(name, SCOPE[name]) for name in names]
    sha = resolve(args.rev) if args.rev else ""
    command = "make mutate" + (f" MODULES='{' '.join(args.modules)}'" if args.modules else "")
    command += f" REV={args.rev}" if args.rev else ""
    where = f"commit {sha[:12]}" if sha else "working tree"
    started = datetime.now(UTC)
    elapsed = 0.0
    if args.report_only:
        tree = snapshot_of(sha) if sha else ROOT
        if not (tree / "mutants").is_dir():
            print(f"no results for the {where}: run make mutate{' REV=' + args.rev if sha else ''}")
            return 2
    else:
        tree = snapshot(sha) if sha else ROOT
        missing = unselected_tests(tree)
        if missing:
            print(f"not in [tool.mutmut] pytest_add_cli_args_test_selection: {', '.join(missing)}")
            return 2
        log_path = tree / "mutants" / "mutate.log"
        print(f"mutmut ({where}) over {', '.join(names)}; log in {log_path.relative_to(ROOT)}")
        globs = [g for r in rows for g in r.module.globs()]
        try:
            with held(tree):
                code, elapsed = run_mutmut(tree, globs, args.max_children)
        except BlockingIOError:
            print(f"another make mutate is running in {tree}; wait for it")
            return 2
        if code != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            print(re.sub(r"[^\n]*\r", "", tail))
            print(f"mutmut failed (exit {code}); see {log_path.relative_to(ROOT)}")
            return code or 1
    results(tree, rows)
    documented = documented_names()
    print()
    if not args.report_only:
        print(
            f"mutation run of {started:%Y-%m-%d %H:%M} UTC on the {where}: {command}, "
            f"{elapsed / 60:.1f} min"
        )
    for line in table(rows, documented):
        print(line)
    undocumented = 0
    for row in rows:
        for label, mutants in (
            ("survived", row.survivors),
            ("no test", row.no_tests),
            ("suspicious", row.suspicious),
        ):
            for mutant in mutants:
                known = mutant in documented
                undocumented += not known
                mark = "documented" if known else "NOT DOCUMENTED"
                print(f"  {label:<10} {mutant}  [{mark}]")
                if args.diffs or not known:
                    print(diff(tree, mutant, row.module.path))
    checked = sum(r.total - len(r.unchecked) for r in rows)
    unchecked = sum(len(r.unchecked) for r in rows)
    rate = sum(r.killed + r.timeouts for r in rows) / checked if checked else 0.0
    print()
    print(
        f"overall kill rate {rate:.1%} (target {TARGET:.0%}); "
        f"{undocumented} survivor(s) neither killed nor documented in docs/MUTATION.md"
        + (f"; {unchecked} mutant(s) not run" if unchecked else "")
    )
    return 0 if rate >= TARGET and not undocumented and not unchecked else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
