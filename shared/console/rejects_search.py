"""Searching a run's rejects file: which rows were left out, where, and why.

As the reverse-ETL tools track each row of a sync, a person looks up one address ("was
she sent?") or one reason ("which rows had no address?") and gets each matching row's
number, its file and line, and its reason, without opening the file.

The file (``row,file,line,email,reason,detail``: shared/prepare/outputs.py) is read as a
stream and the search stops after ``MAX_MATCHES`` matches, so a large file costs one
pass at most and a page never grows past a hundred rows. The address searched for
comes in a POSTed form and is never part of a URL (URLs end up in logs and history).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from shared.constant_contact.contacts import (
    DUPLICATE,
    EMAIL_TOO_LONG,
    INVALID_EMAIL,
    MISSING_EMAIL,
    NON_ASCII_EMAIL,
    NUL_CHARACTER,
    RAGGED_ROW,
    UNBALANCED_QUOTE,
)
from shared.errors import InputError
from shared.prepare.outputs import REJECTS_HEADER
from shared.runs.store import RunStore

MAX_MATCHES = 100
"""The most matches one search shows; the file has them all."""
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024
"""The largest rejects file the console hands out: an answer is held whole in memory.
A larger one (a broken export, most likely) is fetched from where the report says."""
MAX_QUERY = 254
"""The longest address there is (RFC 5321's path limit less its brackets)."""
KNOWN_REASONS = frozenset(
    {
        MISSING_EMAIL,
        INVALID_EMAIL,
        EMAIL_TOO_LONG,
        NON_ASCII_EMAIL,
        RAGGED_ROW,
        UNBALANCED_QUOTE,
        NUL_CHARACTER,
        DUPLICATE,
    }
)
_NEUTRALISED = ("'=", "'+", "'-", "'@", "'\t", "'\r")


@dataclass(frozen=True)
class Query:
    """What to look for: rows whose email contains ``email`` (any letter case), and
    (when given) whose reason is ``reason``. At least one of the two."""

    email: str = ""
    reason: str = ""

    @classmethod
    def of(cls, email: str, reason: str) -> Query:
        """A search as a person typed it; InputError for one that cannot be run."""
        email, reason = email.strip(), reason.strip()
        if not email and not reason:
            raise InputError("type an email address or choose a reason to search the rejects")
        if len(email) > MAX_QUERY:
            raise InputError(f"an email address has at most {MAX_QUERY} characters")
        if reason and reason not in KNOWN_REASONS:
            raise InputError(
                f"{reason!r} is not a reason rows are rejected for; choose one from the list"
            )
        return cls(email, reason)

    def matches(self, reject: Reject) -> bool:
        if self.reason and reject.reason != self.reason:
            return False
        return not self.email or self.email.casefold() in reject.email.strip().casefold()


@dataclass(frozen=True)
class Reject:
    """One row of the rejects file, as it was written (a formula guard taken off)."""

    row: str
    file: str
    line: str
    email: str
    reason: str
    detail: str

    @property
    def file_name(self) -> str:
        """The part's own name, without the folder (the page has the run's source)."""
        return PurePosixPath(self.file.replace("\\", "/")).name or self.file


@dataclass(frozen=True)
class Found:
    query: Query
    matches: tuple[Reject, ...]
    more: bool
    """Matches past MAX_MATCHES were left out."""


def _plain(cell: str) -> str:
    """A cell as it was before the rejects file guarded it against spreadsheets."""
    return cell[1:] if cell.startswith(_NEUTRALISED) else cell


def rejects_of(rows: Iterable[Sequence[str]]) -> Iterator[Reject]:
    """The rejects of a parsed rejects file (its header first; rows of another shape
    are skipped: the file is ccexport's own, so there are none)."""
    found = iter(rows)
    header = next(found, None)
    if header is not None and tuple(header) != REJECTS_HEADER:
        raise InputError("this is not a rejects file ccexport wrote")
    for row in found:
        if len(row) == len(REJECTS_HEADER):
            yield Reject(*(_plain(cell) for cell in row))


def search(rejects: Iterable[Reject], query: Query, limit: int = MAX_MATCHES) -> Found:
    """The first ``limit`` rejects the query matches, in the file's order."""
    matches: list[Reject] = []
    for reject in rejects:
        if query.matches(reject):
            if len(matches) == limit:
                return Found(query, tuple(matches), more=True)
            matches.append(reject)
    return Found(query, tuple(matches), more=False)


class _Pieces(io.RawIOBase):
    """A stream over the file's pieces, as the run store hands them out."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._left:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._left = piece
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def csv_rows(pieces: Iterable[bytes]) -> Iterator[list[str]]:
    """The rows of a CSV file given in pieces of bytes (UTF-8), read as they come."""
    text = io.TextIOWrapper(io.BufferedReader(_Pieces(pieces)), encoding="utf-8", newline="")
    yield from csv.reader(text)


def search_file(pieces: Iterable[bytes], query: Query) -> Found:
    """Search a rejects file given in pieces (blocking: run it in a thread)."""
    try:
        return search(rejects_of(csv_rows(pieces)), query)
    except (csv.Error, UnicodeDecodeError) as exc:
        # Neither quotes the file's content: csv names the limit or the line, the
        # decoder the byte's position.
        raise InputError(f"the rejects file could not be read: {exc}") from None


def search_run(store: RunStore, run_id: str, query: Query) -> Found | None:
    """Search run ``run_id``'s rejects file; None when it has none (blocking)."""
    pieces = store.read_rejects(run_id)
    return None if pieces is None else search_file(pieces, query)


def rejects_file(store: RunStore, run_id: str, where: str = "") -> bytes | None:
    """Run ``run_id``'s rejects file, whole; None when it has none (blocking). Past
    MAX_DOWNLOAD_BYTES, InputError saying where the file is (``where``)."""
    pieces = store.read_rejects(run_id)
    if pieces is None:
        return None
    held = bytearray()
    for piece in pieces:
        held += piece
        if len(held) > MAX_DOWNLOAD_BYTES:
            raise InputError(
                f"this rejects file is larger than {MAX_DOWNLOAD_BYTES >> 20} MB, too large to "
                f"hand out here; fetch it from {where or 'the run store'}"
            )
    return bytes(held)
