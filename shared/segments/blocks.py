"""Cutting a segment's parts into blocks of whole records, so several processes can
parse one file at once, and parsing one block.

A block is a few MB of a part's bytes cut just after a line end. Cutting at line ends
is not always cutting between records: a quoted value may hold line breaks. Whether a
cut fell inside quotes is only certain once the block is parsed, so the parser says
so (``open_quote``) and the reader joins that block with the next and parses again;
with well-formed files that is rare, and a wrong guess costs time, never rows.

Text is decoded per block. Encodings in which a line end is the byte 0x0A and a quote
0x22 (UTF-8, the Windows and ISO code pages, ...) are cut as they are; UTF-16 and
UTF-32 are transcoded to UTF-8 first, in the reading process.
"""

from __future__ import annotations

import _csv
import codecs
import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from shared.errors import InputError

if TYPE_CHECKING:  # at run time only attributes are read: worker processes stay light
    from shared.segments.layout import Part, Segment

# Small blocks keep what is in flight, and so peak memory, small; but each block pays a
# fixed cost of calls into Arrow and numpy, so smaller blocks make prepare slower. This
# size is the balance of the two (`make bench`, bench/bench_prepare.py, measures it).
BLOCK_BYTES = 512 << 10
# A single field may be this large; past it the file is malformed (often an unbalanced
# quote swallowing the rest of the file), and reading stops with an error instead of
# holding the rest of the file in one string.
FIELD_SIZE_LIMIT = 16 * 1024 * 1024
csv.field_size_limit(FIELD_SIZE_LIMIT)
# The same bound for a line of bytes: a part with no line break (or one runaway line)
# is refused as soon as this much has come without one, never held whole.
MAX_LINE_BYTES = FIELD_SIZE_LIMIT
# What one part may hold once decompressed: a generous budget per profile the export
# allows, and never less than a few of the longest lines. A few KB of gzip can inflate
# to many GB; without a cap such a part would be read (and parsed) to its end.
PART_BYTES_PER_PROFILE = 8 * 1024
MIN_PART_BYTES = 4 * MAX_LINE_BYTES

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Block:
    """Whole lines of one part, and what is needed to parse and report them."""

    where: str  # the part, named for people
    data: bytes
    encoding: str
    first_line: int  # physical line number of the block's first byte in its part
    delimiter: str = ","
    skip_header: bool = False  # the block's first record is the part's header row
    last: bool = False  # nothing follows in this part

    def join(self, following: Block) -> Block:
        """This block and the next as one (their cut fell inside a quoted value)."""
        return replace(self, data=self.data + following.data, last=following.last)


def records(block: Block) -> _csv.Reader:
    """A CSV reader over the block's text (decoding errors raise InputError)."""
    if b"\x00" in block.data:
        _refuse_utf16(block)
    try:
        text = block.data.decode(block.encoding)
    except UnicodeDecodeError as exc:
        line = block.first_line + block.data[: max(exc.start, 0)].count(b"\n")
        raise InputError(
            f"{block.where}: cannot decode line {line} as {_shown(block.encoding)} "
            f'({exc.reason}); set "encoding" in the export definition (for example "cp1252")'
        ) from None
    return csv.reader(io.StringIO(text, newline=""), delimiter=block.delimiter, strict=False)


def _refuse_utf16(block: Block) -> None:
    """UTF-16 without a byte-order mark reads as valid UTF-8 with a NUL after every
    ASCII letter: column names and addresses that never match. Say what it is instead.
    (A NUL here and there is a damaged row, rejected row by row.)"""
    head = block.data[:4096]
    if head.count(0) * 3 >= len(head):
        raise InputError(
            f"{block.where}: line {block.first_line} is not UTF-8 text: a third or more of "
            'its bytes are NUL. UTF-16 without a byte-order mark? Then set "encoding" in '
            'the export definition to "utf-16-le" (or "utf-16-be"); a spreadsheet or another '
            "binary file cannot be read, export it as CSV"
        )


def swallowed_rows(values: list[str], width: int, email_column: int, delimiter: str) -> int:
    """How many lines inside a record's values read as rows of the file on their own.

    A quote that opens a value and is not closed on its line makes the reader take
    the following lines into that value, up to the next quote: whole rows vanish into
    one field, and the record may even have the right number of fields. A legitimate
    line break (an address over two lines) does not hold lines with the file's full
    width and an address in its email column; swallowed rows do. Only records that
    span several lines are asked, so well-formed files never pay for this.
    """
    found = 0
    for value in values:
        if "\n" not in value and "\r" not in value:
            continue
        for text in value.splitlines()[1:]:
            fields = next(csv.reader([text], delimiter=delimiter, strict=False), [])
            if len(fields) == width and "@" in fields[email_column]:
                found += 1
    return found


def csv_error(block: Block, line: int, exc: csv.Error) -> InputError:
    return InputError(f"{block.where}: line {line}: {exc} (an unbalanced quote?)")


def _shown(encoding: str) -> str:
    return "UTF-8" if encoding in {"utf-8", "utf-8-sig", "utf_8"} else encoding


def _byte_stream(raw: io.BufferedReader) -> tuple[io.BufferedReader | gzip.GzipFile, bytes]:
    """The file's bytes, gunzipped when they are gzip (whatever the file is called)."""
    if raw.peek(2)[:2] == b"\x1f\x8b":
        unzipped = gzip.GzipFile(fileobj=raw)
        return unzipped, unzipped.peek(4)[:4]
    return raw, raw.peek(4)[:4]


def part_byte_limit(max_profiles: int) -> int:
    """The most decompressed bytes one part may hold for an export of ``max_profiles``."""
    return max(MIN_PART_BYTES, max_profiles * PART_BYTES_PER_PROFILE)


def text_encoding(encoding: str) -> str:
    """The codec's name, if ``encoding`` names a text encoding; else InputError.

    ``codecs.lookup`` also knows bytes-to-bytes and str-to-str codecs (``zlib_codec``,
    ``rot13``, ``base64``), which ``bytes.decode`` refuses with an error that says
    nothing useful; a name shown here is cut short, since it came from a definition.
    """
    shown = encoding[:40]
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):
        raise InputError(f'unknown encoding "{shown}" in the export definition') from None
    if not getattr(info, "_is_text_encoding", True):
        raise InputError(
            f'encoding "{shown}" is not a text encoding; use one such as "utf-8" or "cp1252"'
        )
    return info.name


def _encoding_for(head: bytes, encoding: str | None) -> str:
    if encoding is None:
        return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8-sig")
    if encoding.replace("_", "-").lower() in {"utf-8", "utf8"}:
        return "utf-8-sig"  # a BOM is never part of the first column's name
    return text_encoding(encoding)


def _cuts_safely(encoding: str) -> bool:
    """Whether line ends and quotes are single ASCII bytes in this encoding."""
    try:
        return '\n\r",'.encode(encoding).endswith(b'\n\r",')  # after any BOM
    except UnicodeError:
        return False


def part_blocks(
    segment: Segment, part: Part, size: int = BLOCK_BYTES, *, max_bytes: int | None = None
) -> Iterator[Block]:
    """The part as blocks cut after a line end; the first block keeps any BOM.

    Memory stays within a few blocks and MAX_LINE_BYTES whatever the part holds; past
    ``max_bytes`` (decompressed, see ``part_byte_limit``) reading stops with an error.
    """
    where = segment.store.describe(part.name)
    with segment.store.open(part.name) as raw:
        try:
            stream, head = _byte_stream(raw)
            encoding = _encoding_for(head, segment.encoding)
            base = Block(where, b"", encoding, 1, segment.delimiter)
            if _cuts_safely(encoding):
                chunks: Iterator[bytes] = iter(lambda: stream.read(size), b"")
            else:
                text = io.TextIOWrapper(stream, encoding=encoding, newline="")
                chunks = _transcoded(text, size, where)
                base = replace(base, encoding="utf-8")
            if max_bytes is not None:
                chunks = _capped(chunks, where, max_bytes)
            yield from _cut(base, chunks)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise InputError(
                f"{where}: the gzip file is damaged or cut short ({exc}); upload it again"
            ) from None


def _transcoded(text: io.TextIOWrapper, size: int, where: str) -> Iterator[bytes]:
    try:
        while piece := text.read(size // 2):
            yield piece.encode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: cannot decode it as {text.encoding} ({exc.reason})") from None


def _capped(chunks: Iterator[bytes], where: str, max_bytes: int) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise InputError(
                f"{where}: more than {_megabytes(max_bytes)} once decompressed, the most one "
                "part may hold for the export's max_profiles; raise max_profiles in the "
                "export definition or split the segment into more parts"
            )
        yield chunk


def _megabytes(size: int) -> str:
    return f"{size / (1 << 20):,.0f} MB"


def line_too_long(where: str, line: int) -> InputError:
    return InputError(
        f"{where}: line {line} is longer than {_megabytes(MAX_LINE_BYTES)}: "
        "the file is not CSV, or a line break is missing"
    )


def _whole_lines(chunks: Iterator[bytes], where: str) -> Iterator[tuple[bytes, int]]:
    """Re-cut chunks so each piece ends just after a line end (the last may not), with
    the line number of each piece's first byte.

    A line still open is kept as a list of chunks and joined once, when it ends: each
    byte is copied once, and a line past MAX_LINE_BYTES stops reading at once.
    """
    line = 1
    pending: list[bytes] = []
    pending_bytes = 0
    for chunk in chunks:
        cut = chunk.rfind(b"\n") + 1
        if not cut:  # no line end yet: keep reading
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes > MAX_LINE_BYTES:
                raise line_too_long(where, line)
            continue
        if pending_bytes + chunk.find(b"\n") >= MAX_LINE_BYTES:
            raise line_too_long(where, line)
        data = b"".join([*pending, chunk[:cut]]) if pending else chunk[:cut]
        yield data, line
        line += data.count(b"\n")
        pending = [chunk[cut:]] if cut < len(chunk) else []
        pending_bytes = len(chunk) - cut
    if pending:
        yield b"".join(pending), line


def _cut(base: Block, chunks: Iterator[bytes]) -> Iterator[Block]:
    previous: Block | None = None
    for data, line in _whole_lines(chunks, base.where):
        encoding = base.encoding if previous is None else _without_bom(base.encoding)
        if previous is not None:
            yield previous
        previous = replace(base, data=data, first_line=line, encoding=encoding)
    if previous is not None:
        yield replace(previous, last=True)


def _without_bom(encoding: str) -> str:
    return "utf-8" if encoding == "utf-8-sig" else encoding


def first_record(block: Block) -> list[str] | None:
    """The first non-blank record of a block (to tell a header row from data)."""
    reader = records(block)
    try:
        for values in reader:
            if values:
                return list(values)
    except csv.Error as exc:
        raise csv_error(block, block.first_line + reader.line_num, exc) from None
    return None
