"""Duplicate keys across blocks (shared/prepare/seen_keys.py), exactly: the row a key was first
seen on, or 0; runs kept sorted and merged by the stated rule (a run joins the one
before it once that one is at most four times its size). A key forgotten here is a
duplicate sent twice; a key wrongly found is a person left out as a duplicate."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.prepare.seen_keys import SeenKeys, _merged


def u64(*values: int) -> npt.NDArray[np.uint64]:
    return np.array(values, dtype=np.uint64)


def i64(*values: int) -> npt.NDArray[np.int64]:
    return np.array(values, dtype=np.int64)


def sizes(seen: SeenKeys) -> list[int]:
    return [len(keys) for keys, _ in seen._runs]


def test_nothing_seen_finds_nothing() -> None:
    seen = SeenKeys()
    assert len(seen) == 0
    assert seen.lookup(u64(1, 2)).tolist() == [0, 0]
    seen.add(u64(), i64())
    assert seen._runs == []
    assert seen.lookup(u64()).tolist() == []


def test_each_key_finds_the_row_it_came_with() -> None:
    seen = SeenKeys()
    seen.add(u64(50, 10, 30), i64(1, 2, 3))  # unsorted, as a block gives them
    assert seen.lookup(u64(30, 10, 50, 20, 60, 0)).tolist() == [3, 2, 1, 0, 0, 0]
    seen.add(u64(20, 5), i64(7, 8))
    assert len(seen) == 5
    assert seen.lookup(u64(60, 5, 20, 30, 2**64 - 1)).tolist() == [0, 8, 7, 3, 0]
    seen.clear()
    assert len(seen) == 0
    assert seen.lookup(u64(30)).tolist() == [0]


def test_runs_merge_by_the_four_times_rule() -> None:
    seen = SeenKeys()
    rows = iter(range(1, 1000))

    def add(n: int, start: int) -> None:
        keys = np.arange(start, start + n, dtype=np.uint64)
        seen.add(keys, np.array([next(rows) for _ in range(n)], dtype=np.int64))

    add(40, 0)
    assert sizes(seen) == [40]
    add(9, 100)  # 40 > 4 * 9: a run of its own
    assert sizes(seen) == [40, 9]
    add(2, 200)  # 9 > 8
    assert sizes(seen) == [40, 9, 2]
    add(1, 300)  # 2 <= 4: merged; then 9 <= 12, and 40 <= 48: merged again, twice
    assert sizes(seen) == [52]
    add(13, 400)  # 52 <= 52: merged
    assert sizes(seen) == [65]
    add(16, 500)  # 65 > 64
    assert sizes(seen) == [65, 16]
    for keys, _ in seen._runs:
        assert keys.tolist() == sorted(keys.tolist())
    everything = np.concatenate([k for k, _ in seen._runs])
    assert len(seen) == 81
    found = seen.lookup(np.sort(everything))
    assert sorted(found.tolist()) == list(range(1, 82))  # every row, once


def test_merging_keeps_each_key_with_its_row() -> None:
    keys, rows = _merged(u64(10, 30, 50), i64(1, 3, 5), u64(5, 20, 40, 60), i64(6, 7, 8, 9))
    assert keys.tolist() == [5, 10, 20, 30, 40, 50, 60]
    assert rows.tolist() == [6, 1, 7, 3, 8, 5, 9]
    assert (keys.dtype, rows.dtype) == (np.dtype(np.uint64), np.dtype(np.int64))
    keys, rows = _merged(u64(1, 2), i64(1, 2), u64(3), i64(3))
    assert (keys.tolist(), rows.tolist()) == ([1, 2, 3], [1, 2, 3])
    keys, rows = _merged(u64(7), i64(1), u64(0, 2**64 - 1), i64(3, 2))
    assert keys.tolist() == [0, 7, 2**64 - 1]
    assert rows.tolist() == [3, 1, 2]
