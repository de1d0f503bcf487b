"""List membership as a bitmap over contact indices.

A member costs one bit this way, far less than an int in a set, and paging members in
contact order (what ``GET /contacts?lists=`` does) is a forward scan that runs at C
speed through ``itertools.compress``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

# For each byte value, the eight 0/1 bytes of its bits (bit 0 first): expands a slice
# of the bitmap into one byte per contact so that itertools.compress can pick members.
_EXPAND = [bytes((value >> bit) & 1 for bit in range(8)) for value in range(256)]
_SCAN_BYTES = 1 << 16


class Membership:
    """The members of one list; ``count`` is kept exact on every change."""

    __slots__ = ("bits", "count")

    def __init__(self) -> None:
        self.bits = bytearray()
        self.count = 0

    def __contains__(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self.bits) and bool(self.bits[byte] & (1 << (index & 7)))

    def add(self, index: int) -> bool:
        """Add one contact; False when it was already a member."""
        byte = index >> 3
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte + 1 - len(self.bits) + 1024))
        mask = 1 << (index & 7)
        if self.bits[byte] & mask:
            return False
        self.bits[byte] |= mask
        self.count += 1
        return True

    def discard(self, index: int) -> bool:
        """Remove one contact; False when it was not a member."""
        byte = index >> 3
        mask = 1 << (index & 7)
        if byte >= len(self.bits) or not self.bits[byte] & mask:
            return False
        self.bits[byte] &= ~mask & 0xFF
        self.count -= 1
        return True

    def clear(self) -> None:
        self.bits = bytearray()
        self.count = 0

    def indices(self, start: int = 0) -> Iterator[int]:
        """Member indices from ``start`` upwards, in ascending order."""
        return union_indices([self], start)


def union_indices(memberships: Iterable[Membership], start: int = 0) -> Iterator[int]:
    """Indices that are in any of the memberships, ascending, from ``start``."""
    maps = [m.bits for m in memberships]
    if not maps:
        return
    size = max(len(bits) for bits in maps)
    byte = start >> 3
    while byte < size:
        end = min(size, byte + _SCAN_BYTES)
        chunk = maps[0][byte:end]
        if len(maps) > 1:
            merged = int.from_bytes(chunk.ljust(end - byte, b"\0"), "little")
            for other in maps[1:]:
                merged |= int.from_bytes(other[byte:end].ljust(end - byte, b"\0"), "little")
            chunk = bytearray(merged.to_bytes(end - byte, "little"))
        if any(chunk):
            flags = b"".join([_EXPAND[value] for value in chunk])
            base = byte << 3
            for index in itertools.compress(itertools.count(base), flags):
                if index >= start:
                    yield index
        byte = end
