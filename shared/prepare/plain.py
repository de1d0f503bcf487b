"""Whether a block is plainly clean: the test a block passes to take the columnar path.

Plainly clean means Arrow's CSV reader and Python's csv module cannot read it apart
(shared/prepare/columnar.py says why each rule is there):

- no control character but line ends, no lone carriage return, no backslash;
- no blank line;
- no non-ASCII character that ``str.strip`` would remove;
- every quote in place: a field is unquoted and holds no quote, or is wholly quoted
  on one line with its inner quotes doubled.

Blocks are mapped in threads, so these are numpy passes over the bytes (numpy lets go
of the GIL) and ``in`` tests (memchr), never a regex or ``bytes.count`` over the block,
which hold the GIL for the whole pass and so stall the other threads.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

_LF, _CR, _QUOTE = ord("\n"), ord("\r"), ord('"')
_SPACE_LEADS = (b"\xc2", b"\xe1", b"\xe2", b"\xe3")  # first bytes of the characters below
_UNICODE_SPACE = re.compile(
    rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80"
)
Bytes = npt.NDArray[np.uint8]


def plain_lines(data: bytes, delimiter: str) -> int | None:
    """The number of lines of a plainly clean block, or None when it is not."""
    if not data or b"\\" in data:
        return None
    raw: Bytes = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == _LF)
    if (
        not _only_line_ends(data, raw, ends)
        or _has_blank_line(raw, ends)  # no record to Python's csv, a row of "" to Arrow
        or (any(lead in data for lead in _SPACE_LEADS) and _UNICODE_SPACE.search(data))
        or (b'"' in data and not _quotes_in_place(raw, ends, ord(delimiter)))
    ):
        return None
    return len(ends) + (0 if data.endswith(b"\n") else 1)


def _only_line_ends(data: bytes, raw: Bytes, ends: npt.NDArray[np.intp]) -> bool:
    """No control character but "\n" and "\r\n"."""
    returns = np.flatnonzero(raw == _CR) if b"\r" in data else ends[:0]
    if np.count_nonzero(raw < 0x20) != len(ends) + len(returns):
        return False
    if not len(returns):
        return True
    return bool(returns[-1] < len(raw) - 1 and np.all(raw[returns + 1] == _LF))


def _has_blank_line(raw: Bytes, ends: npt.NDArray[np.intp]) -> bool:
    if raw[0] == _LF or (raw[0] == _CR and len(raw) > 1 and raw[1] == _LF):
        return True
    gaps = np.diff(ends)
    if np.any(gaps == 1):
        return True
    crlf = ends[:-1][gaps == 2]  # "\n?\n": blank when ? is a carriage return
    return bool(np.any(raw[crlf + 1] == _CR))


def _quotes_in_place(raw: Bytes, ends: npt.NDArray[np.intp], delimiter: int) -> bool:
    """Every quote opens a field, closes it, or is doubled inside it, on one line.

    Quotes pair up in order: the first of each pair opens a quoted section and the
    second closes it. A doubled quote inside a value closes one section and opens the
    next right after it, so the rules hold for it too.
    """
    quotes = np.flatnonzero(raw == _QUOTE)
    if len(quotes) % 2:
        return False
    opens, closes = quotes[0::2], quotes[1::2]
    before = raw[np.maximum(opens - 1, 0)]
    opens_ok = (opens == 0) | (before == delimiter) | (before == _LF) | (before == _QUOTE)
    after = raw[np.minimum(closes + 1, len(raw) - 1)]
    closes_ok = (closes == len(raw) - 1) | (after == delimiter) | (after == _CR)
    closes_ok |= (after == _LF) | (after == _QUOTE)
    if not (np.all(opens_ok) and np.all(closes_ok)):
        return False
    # no line end between a quote and the quote that closes it
    return bool(np.array_equal(np.searchsorted(ends, opens), np.searchsorted(ends, closes)))
