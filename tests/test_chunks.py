"""Packing into request bodies: never past 4 MB or 40,000 contacts, and few bodies."""

from __future__ import annotations

import itertools
import random

import orjson
import pytest

from shared.chunks import DEFAULT_MAX_BODY_BYTES, IMPORT_BYTES_LIMIT, MAX_CONTACTS, JsonChunker

LISTS = ["6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b", "0f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"]


def pack(contacts: list[dict[str, str]], **kw: int) -> tuple[list[bytes], JsonChunker]:
    bodies: list[bytes] = []
    chunker = JsonChunker(LISTS, lambda i, b: bodies.append(b), **kw)
    for c in contacts:
        chunker.add(orjson.dumps(c))
    chunker.close()
    return bodies, chunker


def test_bodies_hold_every_contact_in_order_under_the_byte_cap() -> None:
    rng = random.Random(3)
    contacts = [
        {"email": f"u{i}@example.com", "first_name": "x" * rng.randrange(0, 50)}
        for i in range(5000)
    ]
    bodies, chunker = pack(contacts, max_bytes=20_000)
    decoded = [orjson.loads(b) for b in bodies]
    assert [c for d in decoded for c in d["import_data"]] == contacts
    assert all(d["list_ids"] == LISTS for d in decoded)
    assert all(len(b) <= 20_000 for b in bodies)
    assert [c.bytes for c in chunker.chunks] == [len(b) for b in bodies]
    # next-fit packing in order is at most one body above the lower bound
    assert chunker.fewest_possible() <= len(bodies) <= chunker.fewest_possible() + 1
    # and each body but the last is full: the next contact would not have fitted
    for body, nxt in itertools.pairwise(decoded):
        assert len(orjson.dumps(body)) + 1 + len(orjson.dumps(nxt["import_data"][0])) > 20_000


def test_a_body_can_fill_up_to_exactly_the_cap() -> None:
    contact = {"email": "a@example.com", "first_name": "x" * 500}
    one = orjson.dumps(contact)
    overhead = len(b'{"import_data":[],"list_ids":') + len(orjson.dumps(LISTS)) + 1
    cap = overhead + 3 * len(one) + 2  # room for exactly three contacts and two commas
    bodies, _ = pack([contact] * 4, max_bytes=cap)
    assert [len(orjson.loads(b)["import_data"]) for b in bodies] == [3, 1]
    assert len(bodies[0]) == cap


def test_count_limit_of_forty_thousand() -> None:
    _bodies, chunker = pack(
        [{"email": "a@b.co"}] * (MAX_CONTACTS + 1), max_bytes=DEFAULT_MAX_BODY_BYTES
    )
    assert [c.contacts for c in chunker.chunks] == [MAX_CONTACTS, 1]
    assert chunker.fewest_possible() == 2


def test_default_cap_keeps_a_margin_under_four_megabytes() -> None:
    assert DEFAULT_MAX_BODY_BYTES < IMPORT_BYTES_LIMIT == 4_000_000
    contacts = [{"email": f"user{i}@example.com", "first_name": "Anaïs" * 9} for i in range(60_000)]
    bodies, _ = pack(contacts)
    assert max(len(b) for b in bodies) <= DEFAULT_MAX_BODY_BYTES


def test_nothing_in_nothing_out() -> None:
    bodies, chunker = pack([])
    assert bodies == []
    assert chunker.fewest_possible() == 0


def test_cap_outside_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        JsonChunker(LISTS, lambda i, b: None, max_bytes=IMPORT_BYTES_LIMIT + 1)
