"""The fast path of block mapping: whole columns at a time, in Apache Arrow.

The row path (shared/prepare/rows.py) does its work row by row in Python; Arrow's
C++ CSV reader and string kernels do the same work for a plainly clean block in a
fraction of that. "Plainly clean" is checked first and strictly, so that this path
gives byte for byte what the row path gives, and any block it is not sure of goes
to the row path, which knows every rule:

- UTF-8 and plainly clean bytes (shared/prepare/plain.py): no control character but
  the line end, no backslash, no non-ASCII whitespace (Python's ``str.strip`` and
  Arrow's trimming could differ there), quotes only around whole values;
- one record per line (no line break inside a value, no blank line), every record
  the width of the file;
- no value past its field's limit (cutting is the row path's), only text and
  custom fields mapped (dates and numbers are the row path's).

Rows whose email fails here are mapped by the row path's own rules, one by one, so
the reject reasons are the same; if that path would have kept one, the whole block
goes to the row path instead.
"""

from __future__ import annotations

from array import array

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from xxhash import xxh3_64_digest

from shared.constant_contact.contacts import DUPLICATE, EMAIL_MAX, ContactMapper
from shared.prepare.plain import plain_lines
from shared.prepare.results import BlockResult, Reject
from shared.segments.blocks import Block

# The system allocator hands freed blocks back; Arrow's default pool keeps them, which
# costs memory for nothing in return here.
pa.set_memory_pool(pa.system_memory_pool())


_TRIM = " \x0b\x0c"  # the ASCII whitespace left once control bytes are ruled out
_EMAIL_RE2 = (
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


def suits(mapper: ContactMapper) -> bool:
    """Whether this mapping can take the fast path at all."""
    return not mapper.numbers and not mapper.dates


def clean_lines(block: Block) -> int | None:
    """The first test of this path, on the block's bytes: its number of lines when it
    passes, else None (the other tests need it parsed, and seldom fail)."""
    if block.encoding not in {"utf-8", "utf-8-sig"}:
        return None
    return plain_lines(block.data, block.delimiter)


def _clean_table(mapper: ContactMapper, block: Block, lines: int | None) -> pa.Table | None:
    """The block as an Arrow table, when it is plainly clean (one record a line)."""
    if lines is None:
        lines = clean_lines(block)
    if lines is None:
        return None
    names = [f"c{i}" for i in range(mapper.width)]
    try:
        table = pcsv.read_csv(
            pa.BufferReader(block.data),  # not a Python file: no GIL to read it
            read_options=pcsv.ReadOptions(
                column_names=names, use_threads=False, skip_rows=int(block.skip_header)
            ),
            parse_options=pcsv.ParseOptions(
                delimiter=block.delimiter, newlines_in_values=False, ignore_empty_lines=False
            ),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # ragged rows, broken quotes, bad UTF-8: the row path says which
    if table.num_rows != lines - int(block.skip_header) or table.num_rows == 0:
        return None
    return table


def map_block_arrow(
    mapper: ContactMapper, block: Block, lines: int | None = None
) -> BlockResult | None:
    """The block's result, or None when the block is not plainly clean.

    ``lines`` is what ``clean_lines`` gave for the block, when the caller has tested it.
    """
    table = _clean_table(mapper, block, lines)
    if table is None:
        return None
    n = table.num_rows
    columns = [table.column(i).combine_chunks() for i in range(mapper.width)]
    pieces: list[pa.Array | str] = []
    for target, index, limit in mapper.text:
        value = pc.utf8_trim(columns[index], _TRIM)
        if pc.max(pc.utf8_length(value)).as_py() > limit:
            return None  # a value to cut: the row path's job
        value = _escaped(pc.if_else(pc.equal(value, ""), pa.scalar(None, pa.string()), value))
        piece = pc.binary_join_element_wise(f'","{target}":"', value, "", null_handling="emit_null")
        pieces.append(pc.fill_null(piece, ""))
    email = pc.utf8_lower(pc.utf8_trim(columns[mapper.email_index], _TRIM))
    length = pc.utf8_length(email)
    ok = pc.and_(
        pc.and_(pc.greater(length, 0), pc.less_equal(length, EMAIL_MAX)),
        pc.and_(pc.string_is_ascii(email), pc.match_substring_regex(email, _EMAIL_RE2)),
    )
    good = np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)
    result = BlockResult(records=n, columnar=True)
    first_line = block.first_line + int(block.skip_header)
    for row in np.flatnonzero(~good):  # rare: the row path's own reasons
        values = [str(col[row].as_py()) for col in columns]
        if mapper.map(values) is not None:
            return None  # the two paths disagree on this address: let the row path decide
        reason = mapper.reason or ""
        result.rejects.append(Reject(int(row) + 1, first_line + int(row), mapper.email, reason))
    emails = pc.filter(email, ok)
    numbers = np.flatnonzero(good) + 1
    # Duplicates within the block, by the addresses themselves: Arrow numbers distinct
    # values in the order they first appear, and the first row of each is kept.
    codes = np.asarray(emails.dictionary_encode().indices)
    _, firsts = np.unique(codes, return_index=True)
    keep = np.zeros(len(codes), dtype=bool)
    keep[firsts] = True
    for i in np.flatnonzero(~keep).tolist():  # rare
        number, first = int(numbers[i]), int(numbers[firsts[codes[i]]])
        line = first_line + number - 1
        email_i = emails[i].as_py()
        result.rejects.append(Reject(number, line, email_i, DUPLICATE, duplicate_of=first))
    result.rejects.sort(key=lambda r: r.record)
    kept = pa.array(keep)
    contacts = pc.binary_join_element_wise('{"email":"', email, *pieces, '"}', "")
    _fill(result, pc.filter(pc.filter(contacts, ok), kept), pc.filter(emails, kept), numbers[keep])
    return result


def _escaped(values: pa.Array) -> pa.Array:
    """JSON string escaping for values that hold no control character or backslash."""
    return pc.replace_substring(values, '"', '\\"')


def _fill(result: BlockResult, contacts: pa.Array, emails: pa.Array, numbers: np.ndarray) -> None:
    """The result's fields from the kept contacts' JSON objects and emails.

    Each hash is one call at C speed over a list of bytes: no Python code a contact.
    """
    items = pc.binary_join_element_wise(contacts, "", ",")  # each object and its comma
    offsets = np.frombuffer(
        items.buffers()[1], dtype=np.int32, count=len(items) + 1, offset=items.offset * 4
    ).astype(np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    result.items = items.buffers()[2].to_pybytes()[start:end] if len(items) else b""
    result.ends = array("q", (offsets[1:] - start).tobytes())
    result.rows = array("q", numbers.astype(np.int64).tobytes())
    addresses = emails.cast(pa.binary()).to_pylist()
    result.emails = b"\n".join(addresses).decode()
    result.keys = b"".join(map(xxh3_64_digest, addresses))
    result.digests = b"".join(map(xxh3_64_digest, contacts.cast(pa.binary()).to_pylist()))
