"""Blob Storage's read size, the one setting every Blob client of the app shares.

Downloads are asked for in 4 MiB ranges, so reading the first rows of a large segment
file does not first pull 32 MiB (the SDK's default first range). The clients
themselves are built in one place, shared.wiring.
"""

from __future__ import annotations

RANGE_BYTES = 4 << 20
