"""One block of records in, its contacts serialised and its rejects listed out.

This is the per-row work of prepare (parse, map, validate, de-duplicate within the
block, serialise) and it runs in worker processes, one block each, so prepare uses
every core it is given. What comes back is compact: the contacts as one bytes object
with their end offsets, the emails as one string, the rejects as a short list.
Duplicates across blocks are the caller's to find, in order.

Each kept contact also gets two 8-byte XXH3 hashes, made here so the main process
compares a segment with the export's last snapshot (shared/exports/changes.py) without any
per-contact Python work: the key of its email and the digest of its JSON.
"""

from __future__ import annotations

import csv
import operator
import threading
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat

import orjson
from xxhash import xxh3_64_digest

from shared.constant_contact.contacts import (
    DUPLICATE,
    NUL_CHARACTER,
    UNBALANCED_QUOTE,
    ContactMapper,
)
from shared.errors import InputError
from shared.prepare.results import BlockResult, Reject
from shared.segments.blocks import Block, csv_error, records, swallowed_rows


def _hash(result: BlockResult, emails: list[str], items: list[bytes]) -> None:
    """Each kept contact's email key and JSON digest (C speed: no Python loop)."""
    result.keys = b"".join(map(xxh3_64_digest, map(str.encode, emails)))
    result.digests = b"".join(map(xxh3_64_digest, items))


def map_block(
    mapper: ContactMapper, block: Block, *, fast: bool = True, lines: int | None = None
) -> BlockResult:
    """Map every record of the block; errors come back in the result, not raised.

    A plainly clean block takes the columnar fast path (shared/prepare/columnar.py), which
    gives the same result; anything else, and ``fast=False``, takes the row path.
    """
    if fast:
        from shared.prepare import columnar as arrow_blocks  # noqa: PLC0415 - it imports this module

        if arrow_blocks.suits(mapper):
            quick = arrow_blocks.map_block_arrow(mapper, block, lines)
            if quick is not None:
                return quick
    result = BlockResult()
    try:
        _map(mapper, block, result)
    except InputError as exc:
        result.error = exc
    return result


def _map(mapper: ContactMapper, block: Block, result: BlockResult) -> None:
    reader = records(block)
    to_contact, dumps = mapper.map, orjson.dumps
    seen: dict[str, int] = {}
    setdefault = seen.setdefault
    items: list[bytes] = []
    rows, rejects = result.rows, result.rejects
    emails: list[str] = []
    mapper.truncated.clear()
    mapper.invalid.clear()
    n = 0
    line = block.first_line
    values: list[str] = []
    damage = _Damage(mapper.width, mapper.email_index, block.delimiter, b"\x00" in block.data)
    nul = damage.nul
    try:
        if block.skip_header:
            next(reader, None)
            line = block.first_line + reader.line_num
        for values in reader:
            start, line = line, block.first_line + reader.line_num
            if not values:
                continue  # a blank line is not a record
            n += 1
            if (line - start > 1 or nul) and (bad := damage.reject(n, start, line, values)):
                rejects.append(bad)
                continue
            contact = to_contact(values)
            if contact is None:
                rejects.append(Reject(n, start, mapper.email, mapper.reason or "", mapper.detail))
                continue
            email = mapper.email
            first = setdefault(email, n)
            if first != n:
                rejects.append(Reject(n, start, email, DUPLICATE, duplicate_of=first))
                continue
            items.append(dumps(contact))
            rows.append(n)
            emails.append(email)
    except csv.Error as exc:
        raise csv_error(block, line, exc) from None
    # A cut inside quotes leaves the block's last line end inside the last value.
    result.open_quote = not block.last and bool(values) and values[-1].endswith(("\n", "\r"))
    result.records = n
    items.append(b"")  # so the join leaves a comma after the last contact too
    result.items = b",".join(items)
    # each item's end: its length plus its comma, accumulated (all at C speed)
    result.ends = array("q", accumulate(map(operator.add, map(len, items[:-1]), repeat(1))))
    result.emails = "\n".join(emails)
    _hash(result, emails, items[:-1])
    result.truncated = dict(mapper.truncated)
    result.invalid = dict(mapper.invalid)


@dataclass(frozen=True)
class _Damage:
    """Rows a damaged file makes, found before mapping: only records over several lines
    and blocks holding a NUL byte are looked at, so well-formed files never pay."""

    width: int
    at: int  # the email column
    delimiter: str
    nul: bool  # the block holds a NUL byte

    def reject(self, n: int, start: int, following: int, values: list[str]) -> Reject | None:
        """The reject of record ``n`` (lines ``start`` to ``following - 1``), if damaged."""
        email = values[self.at].strip()[:320] if self.at < len(values) else ""
        if following - start > 1:
            lost = swallowed_rows(values, self.width, self.at, self.delimiter)
            if lost:
                detail = (
                    f"lines {start}-{following - 1} were read as one record: a quote in line "
                    f"{start} is not closed on its line, and {lost} of the lines after it look "
                    "like rows of their own; fix the quote and export again"
                )
                return Reject(n, start, email, UNBALANCED_QUOTE, detail)
        if self.nul and any("\x00" in value for value in values):
            detail = "the row holds a NUL character: the file may be damaged"
            return Reject(n, start, email.replace("\x00", ""), NUL_CHARACTER, detail)
        return None


# -- workers: processes or threads ----------------------------------------------------------

# Each worker has a mapper of its own: a ContactMapper keeps the last row's email and
# reason, so threads cannot share one. In a worker process there is one thread.
_worker = threading.local()


def init_worker(columns: Sequence[str], mapping: Mapping[str, str], fast: bool = True) -> None:
    """Pool initializer, run once in each worker process or thread."""
    _worker.mapper = ContactMapper(columns, mapping)
    _worker.fast = fast


def map_block_in_worker(block: Block, lines: int | None = None) -> BlockResult:
    """``lines``: the block's clean lines, when the caller has tested its bytes."""
    mapper: ContactMapper | None = getattr(_worker, "mapper", None)
    assert mapper is not None, "init_worker was not run"
    return map_block(mapper, block, fast=_worker.fast, lines=lines)
