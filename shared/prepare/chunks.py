"""Packing contacts into bulk-import request bodies.

Constant Contact imports at most 40,000 contacts per request and *silently drops*
whatever lies past the first 4 MB of a body, so a body is closed before it would pass
either limit. "4 MB" is read as 4,000,000 bytes and a margin is kept below it. Bodies
are filled in order, so their count is within one of the fewest possible; fewer
requests means less of the 10,000-a-day quota and fewer queued activities.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

IMPORT_BYTES_LIMIT = 4_000_000
DEFAULT_MAX_BODY_BYTES = 3_900_000  # 2.5 % below the limit
MAX_CONTACTS = 40_000


@dataclass(frozen=True)
class ChunkInfo:
    index: int  # 1-based
    contacts: int
    bytes: int


class JsonChunker:
    """Builds ``{"import_data":[...],"list_ids":[...]}`` bodies from serialised contacts.

    ``add`` takes one contact already serialised with orjson; ``emit(index, body)`` is
    called with each finished body, so at most one body is held in memory.
    """

    def __init__(
        self,
        list_ids: Sequence[str],
        emit: Callable[[int, bytes], object],
        *,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_contacts: int = MAX_CONTACTS,
    ) -> None:
        self._prefix = b'{"import_data":['
        self._suffix = b'],"list_ids":' + orjson.dumps(list(list_ids)) + b"}"
        self._overhead = len(self._prefix) + len(self._suffix)
        if max_bytes > IMPORT_BYTES_LIMIT or max_bytes < self._overhead + 1024:
            raise ValueError(f"max_bytes must be between {self._overhead + 1024} and 4,000,000")
        self._emit = emit
        self._max_bytes = max_bytes
        self._max_contacts = max_contacts
        # One growing bytearray per body: holding ~20,000 small bytes objects per body
        # instead fragments the heap around the long-lived dedupe keys, and the process
        # keeps the holes.
        self._buffer = bytearray(self._prefix)
        self._count = 0
        self._room = max_bytes - len(self._suffix) + 1  # the last contact's comma is replaced
        self.chunks: list[ChunkInfo] = []
        self.contacts = 0
        self._payload_bytes = 0  # every contact plus its separating comma, for the lower bound

    def add(self, contact: bytes) -> None:
        if len(self._buffer) + len(contact) + 1 > self._room or self._count >= self._max_contacts:
            if self._count:
                self._flush()
            if len(self._buffer) + len(contact) + 1 > self._room:  # not even in an empty body
                raise ValueError(f"one contact is {len(contact)} bytes, more than a request holds")
        self._buffer += contact
        self._buffer += b","
        self._count += 1

    def add_items(self, items: bytes, ends: Sequence[int]) -> None:
        """Add many serialised contacts at once: ``items`` holds each one followed by a
        comma, ``ends`` the offset just past each comma. Cuts are found by bisection,
        so the cost is per body, not per contact."""
        start = i = 0
        total = len(ends)
        while i < total:
            room = self._room - len(self._buffer)
            j = bisect.bisect_right(
                ends, start + room, i, min(total, i + self._max_contacts - self._count)
            )
            if j == i:
                if not self._count:
                    raise ValueError(
                        f"one contact is {ends[i] - start} bytes, more than a request holds"
                    )
                self._flush()
                continue
            self._buffer += memoryview(items)[start : ends[j - 1]]
            self._count += j - i
            start, i = ends[j - 1], j
            if i < total:
                self._flush()

    def _flush(self) -> None:
        self._payload_bytes += len(self._buffer) - len(self._prefix)
        self._buffer[-1:] = self._suffix  # the trailing comma becomes the closing suffix
        info = ChunkInfo(len(self.chunks) + 1, self._count, len(self._buffer))
        self._emit(info.index, bytes(self._buffer))
        self.chunks.append(info)
        self.contacts += self._count
        self._buffer = bytearray(self._prefix)
        self._count = 0

    def close(self) -> list[ChunkInfo]:
        """Emit the last, partly filled body; returns every body's figures."""
        if self._count:
            self._flush()
        return self.chunks

    def fewest_possible(self) -> int:
        """A lower bound on the bodies any packing needs for the contacts seen."""
        if not self.contacts:
            return 0
        by_bytes = math.ceil(self._payload_bytes / (self._max_bytes - self._overhead + 1))
        return max(by_bytes, math.ceil(self.contacts / self._max_contacts))
