"""Measure: `ccexport prepare` on a 1 MB gzip that inflates to 1 GB with no line break.

The part must be refused, in under 10 s and under 300 MB of peak memory. Run it with
``.venv/bin/python -m bench.gzip_bomb``; it builds the file in a temporary folder and
prints prepare's wall time, peak RSS (of prepare and any process it started) and its
error line. Not part of ``make bench``: it measures a refusal, not throughput.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
INFLATED = 1 << 30
TIME_LIMIT_S = 10.0
MEMORY_LIMIT_MB = 300.0


def write_bomb(path: Path, inflated: int = INFLATED, line_every: int = 0, head: bytes = b"") -> int:
    """A gzip file of ``head`` and then ``inflated`` bytes of one letter (a line break
    every ``line_every`` bytes, or none); returns its compressed size."""
    piece = b"a" * (1 << 20)
    if line_every:
        line = b"a" * (line_every - 1) + b"\n"
        piece = line * max(1, (1 << 20) // line_every)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    with path.open("wb") as out:
        out.write(packer.compress(head))
        written = 0
        while written < inflated:
            out.write(packer.compress(piece))
            written += len(piece)
        out.write(packer.flush())
    return path.stat().st_size


def run_prepare(source: Path, out: Path, *extra: str) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS in MB of the child tree, exit code and stderr of prepare."""
    cmd = [sys.executable, "-m", "shared.workstation.cli", "prepare", str(source),
           "--list-id", "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b", "--map", "email=Email",
           "--out", str(out), *extra]  # fmt: skip
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = psutil.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        # wait4's usage is the child's and its own waited-for children's: its tree only
        # (RUSAGE_CHILDREN would be the largest of every child this process ever had).
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        err.seek(0)
        message = err.read().decode("utf-8", "replace").strip()
    peak_mb = usage.ru_maxrss / 1024  # Linux: KB
    return elapsed, peak_mb, os.waitstatus_to_exitcode(status), message


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        bomb = Path(tmp) / "Table_1.csv.gz"
        size = write_bomb(bomb)
        elapsed, peak_mb, code, message = run_prepare(bomb, Path(tmp) / "out")
    print(f"gzip: {size / 1e6:.2f} MB, inflating to {INFLATED / 1e9:.2f} GB, no line break")
    print(f"prepare: exit {code} in {elapsed:.2f} s, peak RSS {peak_mb:.0f} MB")
    print(f"stderr: {message}")
    ok = code == 2 and elapsed < TIME_LIMIT_S and peak_mb < MEMORY_LIMIT_MB
    print("PASS" if ok else "FAIL", f"(limits: {TIME_LIMIT_S:.0f} s, {MEMORY_LIMIT_MB:.0f} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
