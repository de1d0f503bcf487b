"""plain_lines against a plain-Python statement of the same rules, on random blocks.

The reference is how the rules read in words (a regex for quoted fields, bytes
counts), the way the columnar path first checked them; plain_lines must agree on
every block, clean or not, including the line count.
"""

from __future__ import annotations

import random
import re

import pytest

from shared.prepare.plain import plain_lines

_FIELD = rb'(?:"(?:[^"\r\n]|"")*+"|[^",\r\n]*+)'
_LINE = _FIELD + rb"(?:," + _FIELD + rb")*+\r?"
_QUOTED_LINES = re.compile(rb"(?:" + _LINE + rb"\n)*+(?:" + _LINE + rb")?+")
_UNICODE_SPACES = [c.encode() for c in "\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"]


def reference(data: bytes) -> int | None:
    if not data or any(b < 0x20 and b not in b"\r\n" for b in data) or b"\\" in data:
        return None
    if b"\n\n" in data or b"\n\r\n" in data or data.startswith((b"\n", b"\r\n")):
        return None
    if any(space in data for space in _UNICODE_SPACES):
        return None
    if data.count(b"\r") != data.count(b"\r\n"):
        return None
    if b'"' in data and not _QUOTED_LINES.fullmatch(data):
        return None
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


_PIECES = [b"a", b"b", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"\x01", b"\\", b" ", *[
    c.encode() for c in "é’\xa0\u3000\u2019"
]]  # fmt: skip


def _field(rng: random.Random) -> bytes:
    text = b"".join(rng.choice([b"x", b"y z", b'""', "é".encode(), b","]) for _ in range(3))
    if rng.random() < 0.5:
        return b'"' + text + b'"'
    return text.replace(b'"', b"").replace(b",", b"")


def _structured(rng: random.Random) -> bytes:
    """Mostly well-formed lines, some with one byte changed: the borderline cases."""
    lines = [b",".join(_field(rng) for _ in range(3)) for _ in range(rng.randint(1, 5))]
    data = bytearray(rng.choice([b"\n", b"\r\n"]).join(lines) + rng.choice([b"", b"\n"]))
    if rng.random() < 0.5:
        at = rng.randrange(len(data))
        data[at : at + 1] = rng.choice(_PIECES)
    return bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_plain_lines_agrees_with_the_rules(seed: int) -> None:
    rng = random.Random(seed)
    outcomes = set()
    for _ in range(4000):
        if rng.random() < 0.5:
            data = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 12)))
        else:
            data = _structured(rng)
        expected = reference(data)
        assert plain_lines(data, ",") == expected, data
        outcomes.add(expected is None)
    assert outcomes == {True, False}  # both kinds of block were tried


def test_a_doubled_quote_and_quotes_across_lines() -> None:
    assert plain_lines(b'"a""b",c\n"""",""\n', ",") == 2
    assert plain_lines(b'"a\nb",c\n', ",") is None  # a line break inside a value
    assert plain_lines(b'a"b,c\n', ",") is None  # a quote inside an unquoted value
    assert plain_lines(b'"a"b,c\n', ",") is None  # text after a closing quote
    assert plain_lines(b'"a";"b"\n', ";") == 1
