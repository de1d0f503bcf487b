"""prepare never writes a body Constant Contact would cut: every body of every prepare
here is checked by tests/support/body_checks.py (bytes under the cap, at most 40,000 contacts,
valid JSON, each contact once, exactly the contacts expected, filled in order), on
both ways blocks are mapped: the columnar path (``fast``, Arrow) and the row path.

The expected contacts are written down by each test from the rows it makes, never
read back from prepare; the caps are worked out from sizes the test measures.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from shared.exports.changes import ChangeTracker
from shared.exports.definitions import ExportDefinition
from shared.exports.state import ExportState
from shared.prepare.outputs import LocalOutput
from shared.prepare.pipeline import prepare
from shared.segments import layout as segments
from shared.storage import files
from tests.support.body_checks import (
    CC_CONTACTS_LIMIT,
    DEFAULT_CAP,
    Contact,
    check_bodies,
    check_summary,
    chunk_files,
    compact,
    overhead,
)
from tests.support.segment_trees import csv_bytes

LISTS = ("6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b",)
PATHS = pytest.mark.parametrize("fast", [True, False], ids=["columnar", "rows"])

WIDE = ("Email", "First", "Last", "Note1", "Note2", "Note3")
WIDE_MAPPING = {
    "email": "Email",
    "first_name": "First",
    "last_name": "Last",
    "cf:note1": "Note1",
    "cf:note2": "Note2",
    "cf:note3": "Note3",
}
# Quotes (escaped in JSON), commas (quoted in CSV), 2- and 3-byte UTF-8: bytes, not
# characters, are what the cap counts.
_CHARS = "abcdefghijklmnop qrstuvwxyz,\"'é日"


def run_prepare(
    tmp_path: Path,
    header: tuple[str, ...],
    rows: Sequence[Sequence[str]],
    mapping: dict[str, str],
    *,
    fast: bool,
    cap: int | None = None,
    name: str = "seg",
    **kw: Any,
) -> tuple[dict[str, Any], list[bytes]]:
    """prepare one CSV file (with its header row) to a local folder: its summary and bodies.

    Without ``cap`` prepare packs to its own default, which the bodies are then held to.
    """
    source = tmp_path / f"{name}.csv"
    source.write_bytes(csv_bytes([header, *rows]))
    store, path = files.resolve(str(source), None)
    export = ExportDefinition(list_ids=LISTS, mapping=mapping)
    out = tmp_path / name
    if cap is not None:
        kw["max_body_bytes"] = cap
    result = prepare(segments.locate(store, path), export, LocalOutput(out), fast=fast, **kw)
    return result.summary, chunk_files(out)


def took_path(summary: dict[str, Any], fast: bool) -> None:
    """The blocks went the way the test meant: all columnar, or none."""
    assert summary["blocks"] > 0
    assert summary["columnar_blocks"] == (summary["blocks"] if fast else 0)


_POOL = "".join(random.Random(0).choices(_CHARS, k=1 << 16))


def text(rng: random.Random, limit: int, least: int = 0) -> str:
    """A value of ``least`` to ``limit`` characters, no space at either end."""
    start = rng.randrange(len(_POOL) - limit)
    return _POOL[start : start + rng.randrange(least, limit + 1)].strip(" ")


def wide_rows(
    n: int, seed: int, limit: int = 255, least: int = 0
) -> tuple[list[tuple[str, ...]], list[Contact]]:
    """Rows of up to about a kilobyte each, and the contacts they make."""
    rng = random.Random(seed)
    rows: list[tuple[str, ...]] = []
    expected: list[Contact] = []
    targets = list(WIDE_MAPPING)[1:]
    for i in range(n):
        values = [text(rng, 50), text(rng, 50), *(text(rng, limit, least) for _ in range(3))]
        email = f"p{i}@example.com"
        rows.append((email, *values))
        expected.append(
            {"email": email, **{t: v for t, v in zip(targets, values, strict=True) if v}}
        )
    return rows, expected


# -- the count limit: many tiny contacts, 40,000 to a body whatever the bytes ----------------

TINY: list[Any] = [
    pytest.param(40_000, 1, [40_000], id="40000"),
    pytest.param(40_001, 1, [40_000, 1], id="40001"),
    pytest.param(80_001, 1, [40_000, 40_000, 1], id="80001"),
    pytest.param(80_001, 2, [40_000, 40_000, 1], id="80001-in-blocks-and-workers"),
]


@PATHS
@pytest.mark.parametrize(("n", "workers", "counts"), TINY)
def test_forty_thousand_contacts_to_a_body(
    tmp_path: Path, fast: bool, n: int, workers: int, counts: list[int]
) -> None:
    rows = [(f"p{i}@e.co",) for i in range(n)]
    expected = [{"email": f"p{i}@e.co"} for i in range(n)]
    block_bytes = 1 << 16 if workers > 1 else 1 << 30  # many blocks, or one
    summary, bodies = run_prepare(
        tmp_path, ("Email",), rows, {"email": "Email"},
        fast=fast, workers=workers, block_bytes=block_bytes,
    )  # fmt: skip
    took_path(summary, fast)
    checked = check_bodies(bodies, list_ids=LISTS, expected=expected)
    assert checked.counts == counts
    assert max(checked.sizes) < DEFAULT_CAP // 3  # the count bound these bodies, not bytes
    assert len(bodies) == checked.fewest(DEFAULT_CAP)
    check_summary(summary, checked, DEFAULT_CAP)


# -- the byte cap: few large contacts -------------------------------------------------------


@PATHS
@pytest.mark.parametrize("cap", [3_000, 7_777, 30_000])
def test_bodies_stay_under_a_small_cap_and_are_full(tmp_path: Path, fast: bool, cap: int) -> None:
    rows, expected = wide_rows(400, seed=cap)
    largest = max(len(compact(c)) for c in expected)
    assert overhead(LISTS) + largest <= cap  # each contact fits a body of its own
    summary, bodies = run_prepare(tmp_path, WIDE, rows, WIDE_MAPPING, fast=fast, cap=cap)
    took_path(summary, fast)
    # each body <= cap, and closed only because the next contact would have passed it
    checked = check_bodies(bodies, list_ids=LISTS, cap=cap, expected=expected)
    assert max(checked.counts) < CC_CONTACTS_LIMIT
    assert len(bodies) >= checked.fewest(cap) > 1
    # most contacts hold multi-byte characters: the cap counts bytes, not characters
    assert sum(len(compact(c)) > len(compact(c).decode()) for c in expected) > 300
    check_summary(summary, checked, cap)


@PATHS
@pytest.mark.parametrize(
    ("spare", "counts"),
    [(0, [3, 3, 3]), (1, [3, 3, 3]), (-1, [2, 2, 2, 2, 1])],
    ids=["exactly-the-cap", "a-byte-spare", "a-byte-short"],
)
def test_a_body_fills_to_exactly_the_cap(
    tmp_path: Path, fast: bool, spare: int, counts: list[int]
) -> None:
    rows = [(f"p{i}@example.com", "F" * 50, "L" * 50, "N" * 255, "", "") for i in range(9)]
    expected = [
        {"email": f"p{i}@example.com", "first_name": "F" * 50, "last_name": "L" * 50,
         "cf:note1": "N" * 255}
        for i in range(9)
    ]  # fmt: skip
    size = len(compact(expected[0]))
    assert {len(compact(c)) for c in expected} == {size}
    cap = overhead(LISTS) + 3 * size + 2 + spare  # three contacts and two commas, +- a byte
    summary, bodies = run_prepare(tmp_path, WIDE, rows, WIDE_MAPPING, fast=fast, cap=cap)
    took_path(summary, fast)
    checked = check_bodies(bodies, list_ids=LISTS, cap=cap, expected=expected)
    assert checked.counts == counts
    if spare == 0:
        assert checked.sizes == [cap] * 3
    check_summary(summary, checked, cap)


@PATHS
def test_bodies_stay_under_the_default_cap(tmp_path: Path, fast: bool) -> None:
    """About 4,300 contacts of 900 bytes fill a 3,900,000-byte body: three bodies."""
    rows, expected = wide_rows(10_000, seed=5, least=200)
    summary, bodies = run_prepare(tmp_path, WIDE, rows, WIDE_MAPPING, fast=fast)
    took_path(summary, fast)
    checked = check_bodies(bodies, list_ids=LISTS, cap=DEFAULT_CAP, expected=expected)
    assert len(bodies) == 3
    assert max(checked.counts) < CC_CONTACTS_LIMIT  # bytes bound these bodies
    assert min(checked.sizes[:-1]) > DEFAULT_CAP - 2_000
    fewest = checked.fewest(DEFAULT_CAP)
    assert fewest <= len(bodies) <= fewest + 1
    check_summary(summary, checked, DEFAULT_CAP)


def test_a_contact_larger_than_a_body_fails_the_prepare(tmp_path: Path) -> None:
    """Only a cap below the default can be smaller than one contact (the largest is
    a few tens of kilobytes): prepare then fails and leaves nothing to send."""
    rows, _ = wide_rows(30, seed=2, limit=100)
    rows[20] = ("big@example.com", "F", "L", "日" * 255, "日" * 255, "")  # over 1,530 bytes
    cap = overhead(LISTS) + 1024  # the smallest cap JsonChunker takes
    with pytest.raises(ValueError, match="more than a request holds"):
        run_prepare(tmp_path, WIDE, rows, WIDE_MAPPING, fast=True, cap=cap)
    assert list((tmp_path / "seg").iterdir()) == []


# -- bodies across blocks, workers, duplicates and both paths in one prepare ----------------

MIXED = ("Id", "Email", "First", "Notes", "Long")
MIXED_MAPPING = {"email": "Email", "first_name": "First", "cf:notes": "Notes", "cf:long": "Long"}


def mixed_rows(n: int, seed: int) -> tuple[list[tuple[str, ...]], list[Contact], int, int]:
    """Rows with repeated and broken emails and some line breaks inside values (their
    blocks take the row path); the contacts they make, the rejects and duplicates."""
    rng = random.Random(seed)
    rows: list[tuple[str, ...]] = []
    expected: list[Contact] = []
    kept: set[str] = set()
    broken = repeated = 0
    for i in range(n):
        roll = rng.random()
        if roll < 0.06 and i:
            email = f"P{rng.randrange(i)}@Example.com"  # maybe a row many blocks back
        elif roll < 0.09:
            email = "broken"
        else:
            email = f"p{i}@example.com"
        first = rng.choice(["Zoë", "Anaïs", "Bob", ""])
        notes = rng.choice(["", "plain", 'say "hi"', "a,b", "two\nlines"])
        long = "x" * rng.randrange(256)
        rows.append((str(i), email, first, notes, long))
        if email == "broken":
            broken += 1
        elif email.lower() in kept:
            repeated += 1
        else:
            kept.add(email.lower())
            values = {"first_name": first, "cf:notes": notes, "cf:long": long}
            expected.append({"email": email.lower(), **{k: v for k, v in values.items() if v}})
    return rows, expected, broken, repeated


@PATHS
def test_bodies_across_blocks_workers_and_duplicates(tmp_path: Path, fast: bool) -> None:
    rows, expected, broken, repeated = mixed_rows(3_000, seed=7)
    cap = 5_000
    summary, bodies = run_prepare(
        tmp_path, MIXED, rows, MIXED_MAPPING, fast=fast, cap=cap, workers=2, block_bytes=3_000
    )
    assert (summary["rejected"], summary["duplicates"]) == (broken, repeated)
    assert repeated > 100
    if fast:  # clean blocks on the columnar path, those with a line break on the row path
        assert 0 < summary["columnar_blocks"] < summary["blocks"]
        assert summary["worker_kind"] == "threads and processes"
    else:
        took_path(summary, fast)
    checked = check_bodies(bodies, list_ids=LISTS, cap=cap, expected=expected)
    assert len(bodies) > 50
    check_summary(summary, checked, cap)


@PATHS
def test_a_prepare_of_changes_only_packs_within_the_limits(tmp_path: Path, fast: bool) -> None:
    """An incremental prepare packs what is left of each block once the unchanged
    contacts are taken out: the same limits, the changed and new contacts, in order."""
    rows, contacts = wide_rows(1_200, seed=11, limit=120)
    cap = 4_000
    first, _ = run_prepare(
        tmp_path, WIDE, rows[:1_000], WIDE_MAPPING, fast=fast, cap=cap, name="first",
        changes=ChangeTracker(None), workers=1, block_bytes=32_768,
    )  # fmt: skip
    assert first["changes"]["sent"] == 1_000
    previous = ExportState.from_bytes((tmp_path / "first" / "snapshot.bin").read_bytes())

    # Every 11th person has left, every 7th of the others has a new first name, and
    # 200 new people come in among them: each block holds all three kinds.
    second: list[tuple[str, ...]] = []
    expected: list[Contact] = []
    newcomers = iter(zip(rows[1_000:], contacts[1_000:], strict=True))
    for i, (row, contact) in enumerate(zip(rows[:1_000], contacts[:1_000], strict=True)):
        if i % 11 and i % 7 == 0:
            second.append((row[0], f"New{i}", *row[2:]))
            expected.append({**contact, "first_name": f"New{i}"})
        elif i % 11:
            second.append(row)
        if i % 5 == 0:
            newcomer, new_contact = next(newcomers)
            second.append(newcomer)
            expected.append(new_contact)
    summary, bodies = run_prepare(
        tmp_path, WIDE, second, WIDE_MAPPING, fast=fast, cap=cap, name="second",
        changes=ChangeTracker(previous), workers=1, block_bytes=32_768,
    )  # fmt: skip
    took_path(summary, fast)
    checked = check_bodies(bodies, list_ids=LISTS, cap=cap, expected=expected)
    counts = summary["changes"]
    assert (counts["added"], counts["left"], counts["sent"]) == (200, 91, len(expected))
    assert counts["unchanged"] > 700
    assert summary["blocks"] > 5
    check_summary(summary, checked, cap)
