"""The fast path of block mapping: whole columns at a time, in Apache Arrow.

The row path (shared/block_contacts.py) spends about 4 µs a row in Python; Arrow's
C++ CSV reader and string kernels do the same work for a plainly clean block in a
fraction of that. "Plainly clean" is checked first and strictly, so that this path
gives byte for byte what the row path gives, and any block it is not sure of goes
to the row path, which knows every rule:

- UTF-8; no control character but the line end, no backslash, no non-ASCII
  whitespace (Python's ``str.strip`` and Arrow's trimming could differ there);
- one record per line (no line break inside a value, no blank line), every record
  the width of the file;
- no value past its field's limit (cutting is the row path's), only text and
  custom fields mapped (dates and numbers are the row path's).

Rows whose email fails here are mapped by the row path's own rules, one by one, so
the reject reasons are the same; if that path would have kept one, the whole block
goes to the row path instead.
"""

from __future__ import annotations

import functools
import io
import re
from array import array

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from xxhash import xxh3_64_digest

from shared.block_contacts import BlockResult, Reject
from shared.blocks import Block
from shared.contacts import DUPLICATE, EMAIL_MAX, ContactMapper

# Bytes that send a block to the row path: control characters but \n and \r, and the
# backslash; and the UTF-8 forms of the non-ASCII characters str.strip() removes
# (looked for only when one of their first bytes is there). bytes.translate finds
# bytes of a set at memory speed; a regex over a MB costs milliseconds.
_CONTROL = bytes([*range(0x0A), 0x0B, 0x0C, *range(0x0E, 0x20), ord("\\")])
_SPACE_LEADS = b"\xc2\xe1\xe2\xe3"
_UNICODE_SPACE = re.compile(
    rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
)


# The system allocator hands freed blocks back; Arrow's default pool keeps them, which
# cost each worker process about 30 MB more for nothing in return here.
pa.set_memory_pool(pa.system_memory_pool())


def _all_but(members: bytes) -> bytes:
    return bytes(sorted(set(range(256)) - set(members)))


_NOT_CONTROL = _all_but(_CONTROL)
_NOT_SPACE_LEADS = _all_but(_SPACE_LEADS)


def _unclean(data: bytes) -> bool:
    if data.translate(None, _NOT_CONTROL):  # what is left is control bytes
        return True
    if b"\n\n" in data or b"\n\r\n" in data or data.startswith((b"\n", b"\r\n")):
        return True  # a blank line: not a record to the row path
    leads = data.translate(None, _NOT_SPACE_LEADS)
    return bool(leads) and _UNICODE_SPACE.search(data) is not None


_TRIM = " \x0b\x0c"  # the ASCII whitespace left once the bytes above are ruled out
_EMAIL_RE2 = (
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


@functools.cache
def _quoted_fields(delimiter: str) -> re.Pattern[bytes]:
    """Lines whose every field is unquoted without quotes, or wholly quoted with its
    quotes doubled: where Python's csv and Arrow's reader cannot read a quote apart.
    Possessive, so it runs in one pass (about 8 ms a MB)."""
    d = re.escape(delimiter.encode())
    # the quoted form first: a possessive repetition never comes back to try it
    field = rb'(?:"(?:[^"\r\n]|"")*+"|[^"' + d + rb"\r\n]*+)"
    line = field + rb"(?:" + d + field + rb")*+\r?"
    return re.compile(rb"(?:" + line + rb"\n)*+(?:" + line + rb")?+")


def suits(mapper: ContactMapper) -> bool:
    """Whether this mapping can take the fast path at all."""
    return not mapper.numbers and not mapper.dates


def _clean_table(mapper: ContactMapper, block: Block) -> pa.Table | None:
    """The block as an Arrow table, when it is plainly clean (one record a line)."""
    data = block.data
    if block.encoding not in {"utf-8", "utf-8-sig"} or not data or _unclean(data):
        return None
    if data.count(b"\r") != data.count(b"\r\n"):
        return None  # a lone carriage return
    if b'"' in data and not _quoted_fields(block.delimiter).fullmatch(data):
        return None  # a quote open at a line's end (a cut inside a value) or out of place
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    names = [f"c{i}" for i in range(mapper.width)]
    try:
        table = pcsv.read_csv(
            io.BytesIO(data),
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


def map_block_arrow(mapper: ContactMapper, block: Block) -> BlockResult | None:
    """The block's result, or None when the block is not plainly clean."""
    table = _clean_table(mapper, block)
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
    result = BlockResult(records=n)
    first_line = block.first_line + int(block.skip_header)
    for row in np.flatnonzero(~good):  # rare: the row path's own reasons
        values = [str(col[row].as_py()) for col in columns]
        if mapper.map(values) is not None:
            return None  # the two paths disagree on this address: let the row path decide
        reason = mapper.reason or ""
        result.rejects.append(Reject(int(row) + 1, first_line + int(row), mapper.email, reason))
    emails: list[str] = pc.filter(email, ok).to_pylist()
    numbers = np.flatnonzero(good) + 1
    keep = np.ones(len(emails), dtype=bool)
    seen: dict[str, int] = {}
    for i, (address, number) in enumerate(zip(emails, numbers.tolist(), strict=True)):
        first = seen.setdefault(address, number)
        if first != number:
            keep[i] = False
            result.rejects.append(
                Reject(number, first_line + number - 1, address, DUPLICATE, duplicate_of=first)
            )
    result.rejects.sort(key=lambda r: r.record)
    joined = pc.binary_join_element_wise('{"email":"', email, *pieces, '"},', "")
    items = pc.filter(pc.filter(joined, ok), pa.array(keep))
    _fill(result, items, [e for e, k in zip(emails, keep, strict=True) if k], numbers[keep])
    return result


def _escaped(values: pa.Array) -> pa.Array:
    """JSON string escaping for values that hold no control character or backslash."""
    return pc.replace_substring(values, '"', '\\"')


def _fill(result: BlockResult, items: pa.Array, emails: list[str], numbers: np.ndarray) -> None:
    offsets = np.frombuffer(
        items.buffers()[1], dtype=np.int32, count=len(items) + 1, offset=items.offset * 4
    ).astype(np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    blob = items.buffers()[2].to_pybytes()[start:end] if len(items) else b""
    ends = offsets[1:] - start
    result.items = blob
    result.ends = array("q", ends.tobytes())
    result.rows = array("q", numbers.astype(np.int64).tobytes())
    result.emails = "\n".join(emails)
    # the items without their commas, as the row path hashes them
    bounds = zip([0, *ends[:-1].tolist()][: len(ends)], (ends - 1).tolist(), strict=True)
    result.keys = b"".join(map(xxh3_64_digest, map(str.encode, emails)))
    result.digests = b"".join(xxh3_64_digest(blob[a:b]) for a, b in bounds)
