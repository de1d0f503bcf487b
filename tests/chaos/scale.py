"""How big the chaos suite runs: ``CHAOS_SCALE=small`` (the default, inside ``make test``)
or ``full`` (``make chaos``). Only sizes change between the two, never what is asserted."""

from __future__ import annotations

import os
from dataclasses import dataclass

SCALE_ENV = "CHAOS_SCALE"


@dataclass(frozen=True)
class Scale:
    name: str
    rows: int
    """Rows of the generated segment of each fault run."""
    body_bytes: int
    """Largest import body: small bodies make many chunks, so faults hit many of them."""
    seeds: tuple[int, ...]
    """One run per seed for each fault."""
    kill_rows: int
    """Rows of the segment the killed ``ccexport run`` sends."""
    runaway_line_bytes: int
    """Length of the rows an unclosed quote swallows past the 16 MB field limit."""


SMALL = Scale("small", rows=1_200, body_bytes=24_000, seeds=(1,), kill_rows=3_000,
              runaway_line_bytes=4 << 20)  # fmt: skip
FULL = Scale("full", rows=12_000, body_bytes=40_000, seeds=(1, 2, 3), kill_rows=20_000,
             runaway_line_bytes=150)  # fmt: skip


def current() -> Scale:
    wanted = os.environ.get(SCALE_ENV, "small").strip().lower() or "small"
    if wanted not in {"small", "full"}:
        raise ValueError(f"{SCALE_ENV} must be small or full, not {wanted!r}")
    return FULL if wanted == "full" else SMALL


SCALE = current()
