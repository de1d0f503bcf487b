"""SeenKeys against a plain dict: the same answers through many runs and merges."""

from __future__ import annotations

import numpy as np

from shared.prepare.seen_keys import SeenKeys


def test_lookup_matches_a_dict_through_merges() -> None:
    rng = np.random.default_rng(7)
    seen = SeenKeys()
    reference: dict[int, int] = {}
    row = 0
    for size in [1, 5, 300, 2, 1000, 40, 40, 40, 7000, 3, 0, 900] * 3:
        fresh = rng.integers(0, 2**64, size=size, dtype=np.uint64)
        # a block repeats some keys of earlier blocks, as duplicates across blocks do
        old = np.array(list(reference)[: size // 3], dtype=np.uint64)
        keys = np.unique(np.concatenate([fresh, old]))
        rng.shuffle(keys)
        found = seen.lookup(keys)
        assert found.tolist() == [reference.get(k, 0) for k in keys.tolist()]
        new = keys[found == 0]
        rows = np.arange(row + 1, row + 1 + len(new), dtype=np.int64)
        seen.add(new, rows)
        reference.update(zip(new.tolist(), rows.tolist(), strict=True))
        row += len(new)
    assert len(seen) == len(reference)
    assert len(seen._runs) <= 8  # merged as it went, not one run per block


def test_extreme_keys_and_empty_lookups() -> None:
    seen = SeenKeys()
    assert seen.lookup(np.array([1], dtype=np.uint64)).tolist() == [0]
    top = np.array([2**64 - 1, 0], dtype=np.uint64)
    seen.add(top, np.array([5, 6], dtype=np.int64))
    assert seen.lookup(np.array([0, 1, 2**64 - 1], dtype=np.uint64)).tolist() == [6, 0, 5]
    assert seen.lookup(np.array([], dtype=np.uint64)).tolist() == []
    seen.clear()
    assert len(seen) == 0
