"""The columnar fast path gives exactly what the row path gives, or steps aside."""

from __future__ import annotations

import random
from dataclasses import asdict

import pytest

from shared.constant_contact.contacts import ContactMapper
from shared.prepare.columnar import map_block_arrow
from shared.prepare.rows import map_block
from shared.segments.blocks import Block
from tests.support.segment_trees import csv_bytes

COLUMNS = ("Id", "Email", "First", "Last", "Tier")
MAPPING = {"email": "Email", "first_name": "First", "last_name": "Last", "cf:tier": "Tier"}
NAMES = ["Zoë", "Anaïs", 'Ann "Nan"', "Smith, Jr.", "", "  padded  ", "日本", "O'Brien", "=1+1"]


def rows(n: int, seed: int) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    out: list[tuple[str, ...]] = []
    for i in range(n):
        email = rng.choice(
            [
                f"p{i}@example.com",
                f" P{i}@Example.COM ",
                f"p{rng.randrange(max(i, 1))}@example.com",
                "broken",
                "",
                f"josé{i}@example.com",
                "x" * 45 + "@example.com",
            ]
        )
        out.append((str(i), email, rng.choice(NAMES), rng.choice(NAMES), rng.choice(NAMES)))
    return out


def block(data: bytes, *, skip_header: bool = False) -> Block:
    return Block("part.csv", data, "utf-8", 7, skip_header=skip_header, last=True)


@pytest.mark.parametrize("seed", range(6))
def test_same_result_as_the_row_path(seed: int) -> None:
    mapper = ContactMapper(COLUMNS, MAPPING)
    data = csv_bytes([COLUMNS, *rows(400, seed)], newline="\r\n" if seed % 2 else "\n")
    fast = map_block_arrow(mapper, block(data, skip_header=True))
    assert fast is not None
    slow = map_block(mapper, block(data, skip_header=True), fast=False)
    assert (fast.columnar, slow.columnar) == (True, False)
    assert asdict(fast) | {"columnar": False} == asdict(slow)
    assert slow.rejects  # the inputs do hold bad, long and repeated addresses
    assert any(r.duplicate_of for r in slow.rejects)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('1,a@example.com,"two\nlines",L,T\n', "a line break inside a value"),
        ("1,a@example.com,F,L\n", "a ragged row"),
        ("1,a@example.com,F,L,T\n\n2,b@example.com,F,L,T\n", "a blank line"),
        ("1,a@example.com,F\tG,L,T\n", "a tab"),
        ("1,a@example.com,F\\G,L,T\n", "a backslash"),
        ("1,a@example.com,F\u00a0,L,T\n", "a no-break space"),
        ("1,a@example.com," + "F" * 60 + ",L,T\n", "a value to cut"),
        ("1,a@example.com,F\x00,L,T\n", "a NUL"),
        ('1,a@example.com,"open\n', "a quote still open at the cut"),
        ('1,a@example.com,O"Brien,L,T\n', "a quote inside an unquoted value"),
        ('1,a@example.com,"A"B,L,T\n', "text after a closing quote"),
    ],
)
def test_steps_aside_for_what_only_the_row_path_handles(text: str, why: str) -> None:
    mapper = ContactMapper(COLUMNS, MAPPING)
    assert map_block_arrow(mapper, block(text.encode())) is None, why


def test_non_utf8_blocks_take_the_row_path() -> None:
    mapper = ContactMapper(COLUMNS, MAPPING)
    data = "1,a@example.com,Zoë,L,T\n".encode("cp1252")
    assert map_block_arrow(mapper, Block("p", data, "cp1252", 1, last=True)) is None
    assert map_block_arrow(mapper, block(data)) is None  # not valid UTF-8
