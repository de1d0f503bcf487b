"""The email keys prepare has taken so far, to find duplicates across blocks.

A Python set would hold each 64-bit key as an int object plus a hash slot, several
times the key's 8 bytes; here they are numpy arrays, 16 bytes a key with the row that
carried it. The keys are kept as a few sorted runs, the way a log-structured index
keeps them: each block's keys become a run, and a run is merged into the one before it
once it is at least a quarter of its size, so there are only a handful of runs, and
each key is moved a few times in all. A lookup sorts the block's keys and searches every run.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Keys = npt.NDArray[np.uint64]
Rows = npt.NDArray[np.int64]
_MERGE_SHARE = 4  # merge a run into the one before it when that one is at most 4x its size


class SeenKeys:
    """Keys taken so far, each with the row that first carried it (rows start at 1)."""

    def __init__(self) -> None:
        self._runs: list[tuple[Keys, Rows]] = []  # sorted keys, and their rows

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self._runs)

    def lookup(self, keys: Keys) -> Rows:
        """For each key, the row that first carried it, or 0 for a key not seen yet."""
        found = np.zeros(len(keys), dtype=np.int64)
        if not len(keys) or not self._runs:
            return found
        order = np.argsort(keys)
        wanted = keys[order]
        for run, rows in self._runs:
            at = np.searchsorted(run, wanted)
            np.minimum(at, len(run) - 1, out=at)
            hit = run[at] == wanted
            found[order[hit]] = rows[at[hit]]
        return found

    def add(self, keys: Keys, rows: Rows) -> None:
        """Take keys not seen yet (unique among themselves), with their rows."""
        if not len(keys):
            return
        order = np.argsort(keys)
        self._runs.append((keys[order], rows[order]))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= _MERGE_SHARE * len(
            self._runs[-1][0]
        ):
            (newer, newer_rows), (older, older_rows) = self._runs.pop(), self._runs.pop()
            self._runs.append(_merged(older, older_rows, newer, newer_rows))

    def clear(self) -> None:
        self._runs.clear()


def _merged(older: Keys, older_rows: Rows, newer: Keys, newer_rows: Rows) -> tuple[Keys, Rows]:
    """Two sorted runs as one, in place of a sort: 17 bytes a key of new memory."""
    at = np.searchsorted(older, newer) + np.arange(len(newer))
    from_newer = np.zeros(len(older) + len(newer), dtype=bool)
    from_newer[at] = True
    keys = np.empty(len(from_newer), dtype=np.uint64)
    rows = np.empty(len(from_newer), dtype=np.int64)
    keys[at], rows[at] = newer, newer_rows
    from_older = ~from_newer
    keys[from_older], rows[from_older] = older, older_rows
    return keys, rows
