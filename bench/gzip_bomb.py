"""Measure: `ccexport prepare` on a 1 MB gzip that inflates to 1 GB with no line break.

The part must be refused, in under 10 s and under 300 MB of peak memory. Run it with
``.venv/bin/python -m bench.gzip_bomb``; it builds the file in a temporary folder and
prints prepare's wall time, peak RSS (of prepare and any process it started) and its
error line. Not part of ``make bench``: it measures a refusal, not throughput.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

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


MEASURED = """
import os, sys
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs a command in a child forked from this small process and prints the child
tree's peak RSS (KB). Measured one step removed on purpose: a process started by
vfork from a large parent (pytest) inherits that parent's high-water mark at exec, so
the caller's own wait4 figure would be the caller's size, not prepare's."""


def run_prepare(source: Path, out: Path, *extra: str) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS in MB of the prepare process tree, exit code and stderr."""
    cmd = [sys.executable, "-m", "shared.workstation.cli", "prepare", str(source),
           "--list-id", "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b", "--map", "email=Email",
           "--out", str(out), *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *cmd],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024  # Linux: KB
    return elapsed, peak_mb, done.returncode, done.stderr.strip()


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
