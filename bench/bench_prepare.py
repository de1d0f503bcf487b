"""Benchmark: `ccexport prepare` on a 1,000,000-row Customer Insights export.

Prints wall time, rows/s and peak RSS of prepare, the chunks it made against the fewest
possible, and in the same run the floor: a bare csv-parse + JSON-serialise pass over the
same files. Each measurement runs in a fresh process (peak RSS from wait4); the best of
ROUNDS is kept, alternating floor and prepare so machine noise hits both alike.
Targets (issue 2): prepare within 1.5x the floor, peak RSS at most 256 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """Run cmd; return wall seconds, peak RSS in MB, stdout."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{text}")
    return wall, usage.ru_maxrss / 1024, text


def main() -> int:
    run_dir = DATA / EXPORT / TABLE / RUN
    if not (DATA / "export.json").exists():
        started = time.perf_counter()
        counts = write_sample(DATA, ROWS, parts=2, bad_every=997, duplicate_every=1009)
        print(f"generated {counts.rows:,} rows in {time.perf_counter() - started:.1f}s")
    size = sum(p.stat().st_size for p in run_dir.glob("*.csv"))
    print(f"input: {ROWS:,} rows, 8 columns, {size / 1e6:.1f} MB ({size / ROWS:.0f} bytes/row)")
    exe = str(ROOT / ".venv" / "bin" / "ccexport")
    out = DATA.parent / "prepare-1m-out"
    floor_cmd = [sys.executable, "-c", FLOOR, str(DATA / EXPORT / "model.json"), str(run_dir)]
    prep_cmd = [exe, "prepare", str(run_dir), "--config", str(DATA / "export.json"),
                "--out", str(out), "--json"]  # fmt: skip
    floors: list[tuple[float, float]] = []
    preps: list[tuple[float, float]] = []
    summary: dict[str, object] = {}
    for _ in range(ROUNDS):
        wall, rss, _text = measure(floor_cmd)
        floors.append((wall, rss))
        wall, rss, text = measure(prep_cmd)
        preps.append((wall, rss))
        summary = json.loads(text)
    floor_wall = min(w for w, _ in floors)
    prep_wall = min(w for w, _ in preps)
    prep_rss = max(r for _, r in preps)
    ratio = prep_wall / floor_wall
    print(f"floor (csv parse + orjson), best of {ROUNDS}: {floor_wall:.2f}s, "
          f"peak RSS {max(r for _, r in floors):.0f} MB")  # fmt: skip
    print(f"prepare, best of {ROUNDS}:                  {prep_wall:.2f}s, "
          f"{ROWS / prep_wall:,.0f} rows/s, peak RSS {prep_rss:.0f} MB")  # fmt: skip
    print(f"prepare / floor: {ratio:.2f}x (target <= 1.5x); peak RSS target <= 256 MB")
    print(f"rows_read {summary['rows_read']:,}  contacts {summary['contacts']:,}  "
          f"duplicates {summary['duplicates']:,}  rejected {summary['rejected']:,}")  # fmt: skip
    print(f"chunks {summary['chunks']} (fewest possible {summary['fewest_chunks_possible']}), "
          f"largest {summary['largest_chunk_bytes']:,} bytes")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
