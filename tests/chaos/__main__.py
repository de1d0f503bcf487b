"""``make chaos``: the chaos suite at full scale, then its figures, last.

``python -m tests.chaos [pytest arguments]``; ``CHAOS_SCALE=small`` runs the form
``make test`` runs. The exit status is pytest's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    os.environ.setdefault("CHAOS_SCALE", "full")
    os.environ["CHAOS_FIGURES"] = "driver"  # printed here, not in pytest's summary
    code = pytest.main(["-q", "--show-capture=no", "--durations=10", str(HERE), *argv])
    from tests.chaos.figures import FIGURES  # noqa: PLC0415 - filled by the run above
    from tests.chaos.scale import SCALE  # noqa: PLC0415

    print("\nchaos figures", flush=True)
    for line in FIGURES.lines(SCALE.name):
        print(f"  {line}")
    print(f"  result                {'passed' if code == 0 else f'FAILED (pytest exit {code})'}")
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
