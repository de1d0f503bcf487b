"""Benchmark: 1,000,000 profiles end to end with `ccexport run` against the sandbox.

The whole product path on one machine: a Customer Insights export (1M rows in two
CSV parts plus model.json, with bad rows and duplicates) is prepared, sent as bulk
imports, polled and reported by the function app's orchestrator and activities on the
local Durable Task engine — the `ccexport run` command, in a child process. The
sandbox runs as another child with Constant Contact's real limits (4 requests/s, the
10,000-a-day quota, 1,000 queued activities) and imports at 200,000 contacts/s after
0.5 s in the queue: fast, but slow enough that the run must really wait and poll.

Prints wall time, the peak RSS of the run (the command and any processes it starts,
summed, sampled every 20 ms), the import requests sent against the chunks (one request
per chunk is the fewest possible), and the status polls with the requests each took.
Targets: at most 60 s and 512 MB, import requests == chunks, every poll one
request covering every pending import.

Then the same export runs a second time, unchanged: it must send no import
and take at most 10 % of the first run's wall time. Runs are incremental, so the
second run finds the segment's bytes equal to the last snapshot's and reads no row.
A third run reads a newer run folder in which 1 % of the people changed their first
name: every row is read and compared, and only the changed contacts are sent.

    .venv/bin/python -m bench.bench_end_to_end [--rows N] [--poll-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs pinned

from bench.sample import EXPORT, RUN, TABLE, write_sample
from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.tokens import tokens_secret
from shared.secrets.store import LocalFileSecretStore
from tests.support.sandbox_service import cli_env, running_sandbox

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".bench" / "end-to-end"
TARGET_SECONDS = 60.0
TARGET_MB = 512.0
TARGET_SECOND_RUN_SHARE = 0.10
SANDBOX_FLAGS = {"import_rate": 200_000, "activity_delay": 0.5}  # limits: the real ones
MAPPING = (
    "email=PrimaryEmail", "first_name=FirstName", "last_name=LastName", "city=City",
    "zip=PostalCode", "phone=PrimaryPhone",
)  # fmt: skip


class TreeMemory:
    """Peak of the summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self._root = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self.peak = 0
        self.peak_at = 0.0
        self.peak_split: list[int] = []
        self.most_processes = 0
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                tree = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            sizes = []
            for process in tree:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue
            if sum(sizes) > self.peak:
                self.peak, self.peak_split = sum(sizes), sizes
                self.peak_at = time.perf_counter() - self._started
            self.most_processes = max(self.most_processes, len(tree))
            self._stop.wait(self._every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def sample_folder(rows: int) -> Path:
    folder = DATA / f"sample-{rows}"
    if not (folder / "export.json").exists():
        started = time.perf_counter()
        counts = write_sample(folder, rows, parts=2, bad_every=997, duplicate_every=1009)
        print(
            f"wrote the sample: {counts.rows:,} rows, {counts.bad} bad, {counts.duplicates} "
            f"duplicates in {time.perf_counter() - started:.1f} s (kept in {folder})"
        )
    return folder / EXPORT / TABLE / RUN


def connect(home: Path, token_response: dict[str, Any]) -> None:
    """Store the sandbox account's tokens as `ccexport connect` does."""
    bundle = TokenBundle.from_response(token_response, time.time())

    async def store() -> None:
        async with LocalFileSecretStore(home) as secrets:
            await secrets.set(tokens_secret("default"), bundle.to_json())

    asyncio.run(store())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    args, _ = parser.parse_known_args(argv)  # bench/run.py passes every bench its flags
    source = sample_folder(args.rows)
    with running_sandbox(**SANDBOX_FLAGS) as sandbox, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        connect(home, sandbox.tokens())
        list_id = sandbox.create_list("bench-end-to-end")
        env = cli_env(sandbox, home)
        maps = [arg for pair in MAPPING for arg in ("--map", pair)]
        cmd = [
            sys.executable, "-m", "shared.workstation.cli", "run", str(source),
            "--list-id", list_id,
            *maps, "--json", "--poll-seconds", str(args.poll_seconds),
        ]  # fmt: skip
        first = timed_run(cmd, env)
        if first is None:
            return 1
        stats = sandbox.stats()
        members = len(sandbox.members(list_id))
        sandbox_rss = psutil.Process(sandbox.pid).memory_info().rss
        code = _print(first, stats, members, sandbox_rss)
        second = timed_run(cmd, env)
        if second is None:
            return 1
        after = sandbox.stats()
        members_after = len(sandbox.members(list_id))
        code = _print_second(first, second, stats, after, members, members_after) or code
        cmd[cmd.index(str(source))] = str(changed_folder(source))
        third = timed_run(cmd, env)
        if third is None:
            return 1
        last = sandbox.stats()
    return _print_third(third, after, last) or code


def changed_folder(source: Path, every: int = 100) -> Path:
    """A newer run folder of the sample in which every 100th row has a new first name."""
    target = source.parent.parent / "29" / source.name
    if not target.is_dir():
        target.mkdir(parents=True)
        for part in sorted(source.glob("*.csv")):
            with part.open("rb") as rows, (target / part.name).open("wb") as out:
                for n, line in enumerate(rows):
                    fields = line.split(b",")
                    if n % every == 0 and len(fields) == 8 and b'"' not in line:
                        fields[2] = b"Renamed"
                    out.write(b",".join(fields))
    return target


@dataclass
class TimedRun:
    report: dict[str, Any]
    wall: float
    memory: TreeMemory
    own_peak: int


def timed_run(cmd: list[str], env: dict[str, str]) -> TimedRun | None:
    """`ccexport run` in a child process: its report, wall time and peak memory."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
        memory = TreeMemory(child.pid)
        _pid, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        memory.stop()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode not in (0, 3):
        print(f"ccexport run failed ({child.returncode}):\n{stderr[-3000:]}")
        return None
    return TimedRun(json.loads(stdout), wall, memory, usage.ru_maxrss * 1024)


def _print(run: TimedRun, stats: dict[str, Any], members: int, sandbox_rss: int) -> int:
    report, wall, memory, own_peak = run.report, run.wall, run.memory, run.own_peak
    counts, chunks, requests = report["counts"], report["chunks"], report["requests"]
    calls = stats["requests"]
    imports = sum(calls.get("POST /v3/activities/contacts_json_import", {}).values())
    listings = sum(calls.get("GET /v3/activities", {}).values())
    one_by_one = sum(calls.get("GET /v3/activities/{activity_id}", {}).values())
    peak_mb = memory.peak / 2**20
    quota_used = sum(stats["daily_used"].values())
    polls_ok = requests["status_polls"] == requests["polls_in_one_request"] == listings
    lines = [
        f"status                  {report['status']}",
        f"rows                    {counts['rows_read']:,} read, {counts['contacts']:,} contacts, "
        f"{counts['duplicates']:,} duplicates, {counts['rejected']:,} rejected",
        f"delivered               {counts['contacts_delivered']:,} (Constant Contact counted "
        f"{counts['person_count']:,}; the list holds {members:,})",
        f"wall                    {wall:.1f} s (target {TARGET_SECONDS:.0f} s)",
        f"peak RSS                {peak_mb:.0f} MB run, summed over {memory.most_processes} "
        f"process(es) (target {TARGET_MB:.0f} MB) at {memory.peak_at:.1f} s: "
        + " + ".join(f"{size / 2**20:.0f}" for size in memory.peak_split)
        + f" MB; main process peak {own_peak / 2**20:.0f} MB",
        f"import requests         {imports} sent (sandbox), {requests['import_requests']} by the "
        f"run, for {chunks['total']} chunks (fewest possible {chunks['fewest_possible']})",
        f"status polls            {requests['status_polls']} (each for every pending import), "
        f"in {requests['poll_requests']} request(s): {listings} listing(s), {one_by_one} "
        "single lookups",
        f"throttled (429)         {stats['throttled']}; daily quota used {quota_used}",
        f"sandbox RSS             {sandbox_rss / 2**20:.0f} MB (the stand-in, not counted above)",
    ]
    print("\n".join(lines))
    ok = (
        report["status"] == "completed"
        and members == counts["contacts"]
        and imports == requests["import_requests"] == chunks["total"]
        and polls_ok
        and one_by_one == 0
    )
    within = wall <= TARGET_SECONDS and peak_mb <= TARGET_MB
    verdict = "ok" if ok else "WRONG"
    print(f"result                  {verdict}; targets {'met' if within else 'MISSED'}")
    return 0 if ok else 1


def _imports(stats: dict[str, Any]) -> int:
    return sum(stats["requests"].get("POST /v3/activities/contacts_json_import", {}).values())


def _print_second(  # noqa: PLR0917 - the two runs and the sandbox before and after
    first: TimedRun,
    second: TimedRun,
    before: dict[str, Any],
    after: dict[str, Any],
    members: int,
    members_after: int,
) -> int:
    """The second, unchanged run: no import, a tenth of the first run's time at most."""
    report, changes = second.report, second.report["changes"]
    imports = _imports(after) - _imports(before)
    calls = sum(sum(v.values()) for v in after["requests"].values()) - sum(
        sum(v.values()) for v in before["requests"].values()
    )
    share = second.wall / first.wall
    lines = [
        "",
        "second run, unchanged:",
        f"status                  {report['status']}; {changes['unchanged']:,} contacts "
        f"unchanged, {changes['added']:,} added, {changes['updated']:,} updated"
        + (" (same content: no row read)" if changes["content_unchanged"] else ""),
        f"wall                    {second.wall:.1f} s = {share:.1%} of the first run's "
        f"{first.wall:.1f} s (target {TARGET_SECOND_RUN_SHARE:.0%})",
        f"peak RSS                {second.memory.peak / 2**20:.0f} MB",
        f"imports                 {imports} (target 0); {calls} request(s) to Constant "
        f"Contact in all; the list holds {members_after:,}",
    ]
    print("\n".join(lines))
    ok = report["status"] == "completed" and imports == 0 and members_after == members
    within = share <= TARGET_SECOND_RUN_SHARE
    print(
        f"result                  {'ok' if ok else 'WRONG'}; target {'met' if within else 'MISSED'}"
    )
    return 0 if ok else 1


def _print_third(third: TimedRun, before: dict[str, Any], after: dict[str, Any]) -> int:
    report, changes = third.report, third.report["changes"]
    imports = _imports(after) - _imports(before)
    lines = [
        "",
        "third run, 1 % changed (a newer folder, every row read and compared):",
        f"status                  {report['status']}; {changes['updated']:,} updated, "
        f"{changes['added']:,} added, {changes['unchanged']:,} unchanged",
        f"wall                    {third.wall:.1f} s",
        f"peak RSS                {third.memory.peak / 2**20:.0f} MB run "
        f"(target {TARGET_MB:.0f} MB); main process {third.own_peak / 2**20:.0f} MB",
        f"imports                 {imports} for {report['counts']['contacts_sent']:,} contacts",
    ]
    print("\n".join(lines))
    ok = report["status"] == "completed" and changes["updated"] > 0 and changes["added"] == 0
    print(f"result                  {'ok' if ok else 'WRONG'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
