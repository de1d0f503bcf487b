"""Which blocks take the columnar path (shared/prepare/plain.py): a block holding a
space that ``str.strip`` removes must not, whatever other non-ASCII text surrounds
it (the path reads such values apart from the row path: a contact mangled)."""

from __future__ import annotations

import pytest

from shared.prepare.plain import plain_lines

# Text whose UTF-8 starts with each byte a Unicode space can start with (\xc2, \xe1,
# \xe2, \xe3), none of them a space itself.
LEADS = "¢ ᚠ ’ あ"  # \xc2\xa2, \xe1\x9a\xa0, \xe2\x80\x99, \xe3\x81\x82


@pytest.mark.parametrize("space", ["\xa0", "\u1680", "\u2003", "\u202f", "\u205f", "\u3000"])
def test_a_unicode_space_among_every_lead_byte_is_not_plain(space: str) -> None:
    clean = f"a@example.com,{LEADS}\nb@example.com,x\n".encode()
    assert plain_lines(clean, ",") == 2
    dirty = f"a@example.com,{LEADS}\nb@example.com,x{space}\n".encode()
    assert plain_lines(dirty, ",") is None


def test_a_quoted_value_may_close_at_the_very_end_of_the_block() -> None:
    assert plain_lines(b'a,"b c"', ",") == 1
    assert plain_lines(b'a,"b ""c"""', ",") == 1
    assert plain_lines(b'a,"b\r\n', ",") is None
