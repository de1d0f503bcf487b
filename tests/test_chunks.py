"""Packing into request bodies: never past the byte cap or 40,000 contacts, and few bodies.

prepare packs through ``JsonChunker.add_items`` (one call a block, shared/prepare/pipeline.py),
so that is what these tests drive: in one call, and in blocks cut at every kind of
place, beside ``add`` (one contact at a time). Each body is checked by
tests/support/body_checks.py, from its bytes alone; the boundaries are worked out here from
sizes the test measures, never from the packer's figures.
"""

from __future__ import annotations

import itertools
import math
import random
from array import array
from collections.abc import Callable, Sequence

import orjson
import pytest

from shared.prepare.chunks import (
    DEFAULT_MAX_BODY_BYTES,
    IMPORT_BYTES_LIMIT,
    MAX_CONTACTS,
    JsonChunker,
)
from tests.support.body_checks import (
    CC_BYTES_LIMIT,
    CC_CONTACTS_LIMIT,
    Contact,
    check_bodies,
    compact,
    fewest_bodies,
    overhead,
    room,
)

LISTS = ["6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b", "0f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"]
Feed = Callable[[JsonChunker, list[bytes]], None]


def one_call(chunker: JsonChunker, contacts: list[bytes]) -> None:
    """As prepare does for a segment of one block."""
    items = b"".join(c + b"," for c in contacts)
    ends = array("q", itertools.accumulate(len(c) + 1 for c in contacts))
    chunker.add_items(items, ends)


def in_blocks(chunker: JsonChunker, contacts: list[bytes]) -> None:
    """As prepare does block after block: calls of 0, 1, 2 ... contacts, and some large."""
    rng = random.Random(len(contacts))
    at = 0
    while at < len(contacts):
        n = rng.choice([0, 1, 2, 3, 7, 100, 3_001, 9_999])
        one_call(chunker, contacts[at : at + n])
        at += n


def one_by_one(chunker: JsonChunker, contacts: list[bytes]) -> None:
    for c in contacts:
        chunker.add(c)


FEEDS = pytest.mark.parametrize("feed", [one_call, in_blocks, one_by_one])


def pack(feed: Feed, contacts: Sequence[Contact], **kw: int) -> tuple[list[bytes], JsonChunker]:
    bodies: list[bytes] = []
    chunker = JsonChunker(LISTS, lambda _i, b: bodies.append(b), **kw)
    feed(chunker, [orjson.dumps(c) for c in contacts])
    chunker.close()
    return bodies, chunker


def alike(n: int, size: int, start: int = 0) -> list[Contact]:
    """n contacts of exactly ``size`` bytes each, serialised (emails from ``start``)."""
    contacts = [
        {"email": f"p{i:06d}@example.com", "first_name": ""} for i in range(start, start + n)
    ]
    pad = size - len(compact(contacts[0]))
    assert pad >= 0
    return [{**c, "first_name": "x" * pad} for c in contacts]


@FEEDS
@pytest.mark.parametrize("cap", [1_200, 20_000, 65_536])
def test_bodies_hold_every_contact_in_order_under_the_byte_cap(feed: Feed, cap: int) -> None:
    rng = random.Random(cap)
    contacts = [
        {"email": f"u{i}@example.com", "first_name": "x" * rng.randrange(0, 50),
         "cf:note": "Anaïs 日本 \"q\" " * rng.randrange(0, 30)}
        for i in range(5000)
    ]  # fmt: skip
    bodies, chunker = pack(feed, contacts, max_bytes=cap)
    checked = check_bodies(bodies, list_ids=LISTS, cap=cap, expected=contacts)  # and full
    # Filled in order, each body but the last wants at most the largest contact (and its
    # comma) to be full, so at most P / (room - largest - 1) bodies hold P bytes of
    # contacts and commas; and at least P / room. Within one when that is small.
    sizes = [len(compact(c)) for c in contacts]
    payload = sum(sizes) + len(sizes)
    fewest = fewest_bodies(sum(sizes), len(sizes), LISTS, cap)
    assert fewest == checked.fewest(cap) == math.ceil(payload / room(LISTS, cap))
    most = math.ceil(payload / (room(LISTS, cap) - max(sizes) - 1))
    assert fewest <= len(bodies) <= most
    if cap == 65_536:
        assert len(bodies) <= fewest + 1
    assert chunker.fewest_possible() == fewest  # the figure prepare reports
    assert [(c.index, c.contacts, c.bytes) for c in chunker.chunks] == [
        (i, k, b) for i, (k, b) in enumerate(zip(checked.counts, checked.sizes, strict=True), 1)
    ]
    assert chunker.contacts == len(contacts)


@FEEDS
@pytest.mark.parametrize(
    ("spare", "counts"),
    [(0, [3, 3, 1]), (1, [3, 3, 1]), (-1, [2, 2, 2, 1])],
    ids=["exactly-the-cap", "a-byte-spare", "a-byte-short"],
)
def test_a_body_fills_to_exactly_the_cap_and_not_a_byte_more(
    feed: Feed, spare: int, counts: list[int]
) -> None:
    contacts = alike(7, 500)
    cap = overhead(LISTS) + 3 * 500 + 2 + spare  # three contacts and two commas, +- a byte
    bodies, _ = pack(feed, contacts, max_bytes=cap)
    checked = check_bodies(bodies, list_ids=LISTS, cap=cap, expected=contacts)
    assert checked.counts == counts
    if spare >= 0:
        assert checked.sizes[:2] == [cap - spare] * 2


@FEEDS
def test_one_contact_can_fill_a_body_alone(feed: Feed) -> None:
    cap = overhead(LISTS) + 1024 + 200
    contacts = [*alike(2, 600), *alike(1, cap - overhead(LISTS), 2), *alike(2, 600, 3)]
    bodies, _ = pack(feed, contacts, max_bytes=cap)
    checked = check_bodies(bodies, list_ids=LISTS, cap=cap, expected=contacts)
    assert checked.counts == [2, 1, 2]
    assert checked.sizes[1] == cap


@FEEDS
@pytest.mark.parametrize("where", [0, 3])
def test_a_contact_larger_than_a_body_is_refused(feed: Feed, where: int) -> None:
    """A contact that does not fit an empty body raises ValueError, whether it comes
    first or after others (those are emitted, whole, before it): none is cut or lost
    silently, and no empty or broken body is written."""
    cap = overhead(LISTS) + 1024 + 200
    contacts = alike(6, 300)
    contacts[where] = alike(1, cap - overhead(LISTS) + 1, start=99)[0]  # a byte too many
    bodies: list[bytes] = []
    chunker = JsonChunker(LISTS, lambda _i, b: bodies.append(b), max_bytes=cap)
    with pytest.raises(ValueError, match="more than a request holds"):
        feed(chunker, [orjson.dumps(c) for c in contacts])
    check_bodies(bodies, list_ids=LISTS, cap=cap, expected=contacts[:where])


@FEEDS
@pytest.mark.parametrize(
    ("n", "counts"),
    [
        (CC_CONTACTS_LIMIT - 1, [39_999]),
        (CC_CONTACTS_LIMIT, [40_000]),
        (CC_CONTACTS_LIMIT + 1, [40_000, 1]),
        (2 * CC_CONTACTS_LIMIT + 1, [40_000, 40_000, 1]),
    ],
)
def test_forty_thousand_contacts_to_a_body(feed: Feed, n: int, counts: list[int]) -> None:
    contacts = [{"email": f"p{i}@e.co"} for i in range(n)]
    bodies, chunker = pack(feed, contacts)  # the default cap: bytes never bind here
    checked = check_bodies(bodies, list_ids=LISTS, expected=contacts)
    assert checked.counts == counts
    assert max(checked.sizes) < DEFAULT_MAX_BODY_BYTES // 2
    assert chunker.fewest_possible() == checked.fewest(DEFAULT_MAX_BODY_BYTES) == len(counts)


@FEEDS
def test_the_count_and_the_cap_together(feed: Feed) -> None:
    """With a lower count limit, whichever limit comes first closes the body."""
    rng = random.Random(8)
    contacts = [{"email": f"u{i}@example.com", "x": "y" * rng.randrange(500)} for i in range(600)]
    bodies, _ = pack(feed, contacts, max_bytes=2_000, max_contacts=7)
    checked = check_bodies(bodies, list_ids=LISTS, cap=2_000, expected=contacts, max_contacts=7)
    assert 7 in checked.counts  # the count closed some bodies
    assert any(k < 7 for k in checked.counts[:-1])  # the bytes closed others


def test_the_default_cap_keeps_a_margin_under_four_megabytes() -> None:
    assert DEFAULT_MAX_BODY_BYTES < IMPORT_BYTES_LIMIT == CC_BYTES_LIMIT
    assert MAX_CONTACTS == CC_CONTACTS_LIMIT
    contacts = [{"email": f"user{i}@example.com", "first_name": "Anaïs" * 9} for i in range(60_000)]
    bodies, _ = pack(one_call, contacts)
    checked = check_bodies(bodies, list_ids=LISTS, cap=DEFAULT_MAX_BODY_BYTES, expected=contacts)
    assert max(checked.counts) < CC_CONTACTS_LIMIT  # bytes bound the first body
    assert checked.sizes[0] > DEFAULT_MAX_BODY_BYTES - 100


@FEEDS
def test_nothing_in_nothing_out(feed: Feed) -> None:
    bodies, chunker = pack(feed, [])
    assert bodies == []
    assert chunker.chunks == []
    assert chunker.fewest_possible() == 0


def test_empty_calls_between_blocks_change_nothing() -> None:
    contacts = alike(10, 400)
    bodies: list[bytes] = []
    chunker = JsonChunker(LISTS, lambda _i, b: bodies.append(b), max_bytes=1_500)
    serialised = [orjson.dumps(c) for c in contacts]
    for at in range(0, len(serialised), 3):
        chunker.add_items(b"", array("q"))
        one_call(chunker, serialised[at : at + 3])
    chunker.add_items(b"", array("q"))
    chunker.close()
    checked = check_bodies(bodies, list_ids=LISTS, cap=1_500, expected=contacts)
    assert checked.counts == [3, 3, 3, 1]


def test_caps_outside_what_a_body_can_be_are_refused() -> None:
    smallest = overhead(LISTS) + 1024
    for cap in (CC_BYTES_LIMIT + 1, smallest - 1):
        with pytest.raises(ValueError, match="max_bytes"):
            JsonChunker(LISTS, lambda _i, _b: None, max_bytes=cap)
    for cap in (CC_BYTES_LIMIT, smallest):
        JsonChunker(LISTS, lambda _i, _b: None, max_bytes=cap)
