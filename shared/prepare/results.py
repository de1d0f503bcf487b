"""What mapping one block of records gives back, on either path (rows or columnar).

Both paths fill the same compact result, so the caller (and a worker process's pickle)
sees one shape whichever path a block took.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from shared.errors import InputError


@dataclass
class Reject:
    record: int  # 1-based record number within the block
    line: int  # physical line in the part where the record starts
    email: str
    reason: str
    detail: str = ""
    duplicate_of: int = 0  # record number (within the block) that carries the email


@dataclass
class BlockResult:
    records: int = 0  # data records read (blank lines and the header row not counted)
    items: bytes = b""  # each contact's JSON followed by a comma
    ends: array[int] = field(default_factory=lambda: array("q"))  # end offset of each item
    emails: str = ""  # the kept contacts' emails, "\n"-separated, unique in the block
    rows: array[int] = field(default_factory=lambda: array("q"))  # record number of each item
    rejects: list[Reject] = field(default_factory=list)
    truncated: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    open_quote: bool = False  # the block ended inside a quoted value: join it with the next
    error: InputError | None = None
    keys: bytes = b""  # 8 bytes per kept contact: its email's key (shared/exports/state.py)
    digests: bytes = b""  # 8 bytes per kept contact: the digest of its JSON
    columnar: bool = False  # mapped on the columnar path (shared/prepare/columnar.py)
