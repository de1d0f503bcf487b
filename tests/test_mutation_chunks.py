"""Packing bodies (shared/prepare/chunks.py) where its arithmetic is tight: the smallest and
largest caps it takes, the lower bound on bodies when the contacts fill whole bodies
to the byte, and the size an oversized contact is reported with when it arrives in a
batch. tests/test_chunks.py holds the packing itself; these pin its edges."""

from __future__ import annotations

import orjson
import pytest

from shared.prepare.chunks import IMPORT_BYTES_LIMIT, JsonChunker

LISTS = ["6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"]
# b'{"import_data":[' and b'],"list_ids":["..."]}': what every body holds besides contacts
OVERHEAD = len(b'{"import_data":[') + len(b'],"list_ids":') + len(orjson.dumps(LISTS)) + 1


def contact(i: int, size: int) -> bytes:
    """A serialised contact of exactly ``size`` bytes."""
    head = orjson.dumps({"email": f"p{i:05d}@example.com", "first_name": ""})
    body = orjson.dumps({"email": f"p{i:05d}@example.com", "first_name": "x" * (size - len(head))})
    assert len(body) == size
    return body


def test_the_caps_a_chunker_takes() -> None:
    assert (
        len(b'{"import_data":[],"list_ids":["6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"]}') == OVERHEAD
    )
    JsonChunker(LISTS, lambda _i, _b: None, max_bytes=IMPORT_BYTES_LIMIT)
    JsonChunker(LISTS, lambda _i, _b: None, max_bytes=OVERHEAD + 1024)
    message = f"^max_bytes must be between {OVERHEAD + 1024} and 4,000,000$"
    for wrong in (IMPORT_BYTES_LIMIT + 1, OVERHEAD + 1023, 0):
        with pytest.raises(ValueError, match=message):
            JsonChunker(LISTS, lambda _i, _b: None, max_bytes=wrong)


@pytest.mark.parametrize("bodies", [1, 2, 5])
def test_the_lower_bound_when_contacts_fill_bodies_to_the_byte(bodies: int) -> None:
    """Three 500-byte contacts and their commas fill a body exactly: n such bodies'
    worth of contacts need n bodies, not one more."""
    cap = OVERHEAD + 3 * 500 + 2
    emitted: list[bytes] = []
    chunker = JsonChunker(LISTS, lambda _i, b: emitted.append(b), max_bytes=cap)
    for i in range(3 * bodies):
        chunker.add(contact(i, 500))
    chunker.close()
    assert [len(b) for b in emitted] == [cap] * bodies
    assert chunker.fewest_possible() == bodies
    one_more = JsonChunker(LISTS, lambda _i, _b: None, max_bytes=cap)
    for i in range(3 * bodies + 1):
        one_more.add(contact(i, 500))
    one_more.close()
    assert one_more.fewest_possible() == bodies + 1


def test_an_oversized_contact_in_a_batch_is_named_by_its_own_size() -> None:
    cap = OVERHEAD + 1024 + 100
    items = bytearray()
    ends: list[int] = []
    for i, size in enumerate([300, 300, cap]):  # the third cannot fit any body
        items += contact(i, size) + b","
        ends.append(len(items))
    emitted: list[bytes] = []
    chunker = JsonChunker(LISTS, lambda _i, b: emitted.append(b), max_bytes=cap)
    with pytest.raises(
        ValueError, match=f"^one contact is {cap + 1} bytes, more than a request holds$"
    ):
        chunker.add_items(bytes(items), ends)
    assert [len(orjson.loads(b)["import_data"]) for b in emitted] == [2]  # the two before it
    with pytest.raises(
        ValueError, match=f"^one contact is {cap} bytes, more than a request holds$"
    ):
        JsonChunker(LISTS, lambda _i, _b: None, max_bytes=cap).add(contact(9, cap))
