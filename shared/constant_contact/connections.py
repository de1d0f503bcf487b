"""Connection names: one authorised Constant Contact account, named by an admin.

A name becomes part of secret, lock and blob names, so it keeps to the alphabet every
store accepts (the same rule as export names).
"""

from __future__ import annotations

import re

from shared.errors import ConfigError

DEFAULT_CONNECTION = "default"
"""The connection a command or an export uses when it names none."""

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""Connection and export names: 1-63 lower-case letters, digits and dashes."""


def check_connection(name: str) -> str:
    """A connection name fit for secret and lock names: lower case, digits, dashes."""
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"invalid connection name {name[:70]!r}: use 1-63 lower-case letters, digits "
            "and dashes, starting with a letter or digit"
        )
    return name
