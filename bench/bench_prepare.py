"""Benchmark: `ccexport prepare` on a 1,000,000-row Customer Insights export.

Prints wall time, rows/s and peak RSS of prepare, the chunks it made against the fewest
possible, and in the same run the floor: a bare csv-parse + JSON-serialise pass over the
same files. Each measurement runs in a fresh process (peak RSS from wait4); the best of
ROUNDS is kept, alternating floor and prepare so machine noise hits both alike.
Targets: prepare within 1.5x the floor, peak RSS at most 256 MB. The same
rows are measured three ways: quoted only where needed; every field quoted, as
Customer Insights' CDM format does by default; and quoted with a line break inside
one value in 500, which sends most blocks to the row path (worker processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.sample import EXPORT, RUN, TABLE, write_sample

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".bench" / "prepare-1m"
ROWS = 1_000_000
ROUNDS = 3

FLOOR = """
import csv, glob, sys, orjson
cols = None
import json
cols = [a["name"] for a in json.load(open(sys.argv[1]))["entities"][0]["attributes"]]
n = 0
for path in sorted(glob.glob(sys.argv[2] + "/*.csv")):
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            orjson.dumps(dict(zip(cols, row)))
            n += 1
print(n)
"""


@dataclass
class Measured:
    wall: float
    cpu: float  # user + system seconds of the process and every process it started
    rss_main: float  # MB, peak of the process itself
    pss_tree: float  # MB, peak of the summed proportional set size of the process tree
    # (PSS shares each page among the processes that map it; a plain RSS sum would count
    # the pages worker processes share with their parent once per process)
    text: str


def measure(cmd: list[str]) -> Measured:
    """Run cmd, sampling the memory and CPU of its whole process tree every 50 ms."""
    start = time.perf_counter()
    peak_main = peak_tree = 0.0
    cpu: dict[int, float] = {}
    with tempfile.TemporaryFile() as out:
        proc = psutil.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        while proc.poll() is None:
            try:
                tree = [proc, *proc.children(recursive=True)]
                mem = {p.pid: p.memory_full_info() for p in tree}
                for p in tree:
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
            except psutil.Error:
                continue  # a process ended between listing and reading it
            peak_main = max(peak_main, mem[proc.pid].rss / 2**20)
            peak_tree = max(peak_tree, sum(m.pss for m in mem.values()) / 2**20)
            time.sleep(0.05)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{text}")
    return Measured(wall, sum(cpu.values()), peak_main, peak_tree, text)


VARIANTS: tuple[tuple[str, dict[str, Any], str], ...] = (  # folder suffix, options, what
    ("", {}, "fields quoted only where needed"),
    ("-quoted", {"quote_all": True}, "every field quoted (QuoteAlways, the CDM default)"),
    (
        "-line-breaks",
        {"quote_all": True, "line_break_every": 500},
        "every field quoted, a line break in one city in 500: most blocks take the row path",
    ),
)


def main() -> int:
    for suffix, options, what in VARIANTS:
        print(what)
        bench(DATA.with_name(DATA.name + suffix), options, targets=not suffix)
    return 0


def bench(data: Path, options: dict[str, Any], *, targets: bool) -> None:
    """One variant; the targets are for the first (its file), shown only there."""
    run_dir = data / EXPORT / TABLE / RUN
    if not (data / "export.json").exists():
        started = time.perf_counter()
        counts = write_sample(data, ROWS, parts=2, bad_every=997, duplicate_every=1009, **options)
        print(f"generated {counts.rows:,} rows in {time.perf_counter() - started:.1f}s")
    size = sum(p.stat().st_size for p in run_dir.glob("*.csv"))
    print(f"input: {ROWS:,} rows, 8 columns, {size / 1e6:.1f} MB ({size / ROWS:.0f} bytes/row)")
    exe = str(ROOT / ".venv" / "bin" / "ccexport")
    out = data.parent / "prepare-1m-out"
    floor_cmd = [sys.executable, "-c", FLOOR, str(data / EXPORT / "model.json"), str(run_dir)]
    prep_cmd = [exe, "prepare", str(run_dir), "--config", str(data / "export.json"),
                "--out", str(out), "--json"]  # fmt: skip
    floors: list[Measured] = []
    preps: list[Measured] = []
    for _ in range(ROUNDS):
        floors.append(measure(floor_cmd))
        preps.append(measure(prep_cmd))
    summary = json.loads(preps[-1].text)
    floor = min(floors, key=lambda m: m.wall)
    best = min(preps, key=lambda m: m.wall)
    print(f"floor (csv parse + orjson, 1 process), best of {ROUNDS}: {floor.wall:.2f}s wall, "
          f"{floor.cpu:.2f}s CPU, peak RSS {floor.rss_main:.0f} MB")  # fmt: skip
    kind = (
        f"{summary['workers']} workers: {summary['worker_kind']}; "
        f"{summary['columnar_blocks']} of {summary['blocks']} blocks columnar"
    )
    print(f"prepare ({kind}), best of {ROUNDS}: {best.wall:.2f}s wall, "
          f"{ROWS / best.wall:,.0f} rows/s, {best.cpu:.2f}s CPU (all processes)")  # fmt: skip
    tree = max(m.pss_tree for m in preps)
    print(f"  peak memory: {max(m.rss_main for m in preps):.0f} MB RSS of the main process, "
          f"{tree:.0f} MB PSS of it and any process it started")  # fmt: skip
    wall_target, memory_target = (" (target <= 1.5x)", " (target <= 256)") if targets else ("", "")
    print(f"prepare / floor: {best.wall / floor.wall:.2f}x wall{wall_target}, "
          f"{best.cpu / floor.cpu:.2f}x CPU; memory {tree:.0f} MB{memory_target}")  # fmt: skip
    print(f"rows_read {summary['rows_read']:,}  contacts {summary['contacts']:,}  "
          f"duplicates {summary['duplicates']:,}  rejected {summary['rejected']:,}")  # fmt: skip
    print(f"chunks {summary['chunks']} (fewest possible {summary['fewest_chunks_possible']}), "
          f"largest {summary['largest_chunk_bytes']:,} bytes")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
