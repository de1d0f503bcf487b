"""Run every benchmark module (bench/bench_*.py) in its own process and print its figures.

Each module is runnable as `python -m bench.<name>` and prints its own report; running
them in separate processes keeps one benchmark's memory out of the next one's peak RSS.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = 0
    for path in sorted(HERE.glob("bench_*.py")):
        name = f"bench.{path.stem}"
        print(f"\n=== {name} ===", flush=True)
        rc = subprocess.call([sys.executable, "-m", name, *sys.argv[1:]], cwd=HERE.parent)
        if rc:
            print(f"{name} exited with {rc}", flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
