"""Which contacts of a segment are new or changed since the export's last snapshot.

prepare's main process takes block results in file order (shared/prepare/pipeline.py); each
block brings, beside its serialised contacts, the 8-byte key of every contact's email
and the 8-byte digest of its JSON, made in the worker processes. Here the block's keys
are looked up in the last snapshot (sorted arrays, a vectorised binary search), and
only new and changed contacts go on to the chunker; unchanged ones are counted. A
block with nothing changed costs a few array operations, whatever its size, so an
unchanged million-contact segment adds well under a second to reading it.

The keys and digests of every contact are kept (16 bytes a contact) to become the
next snapshot once the run has succeeded (shared/exports/state.py).

When the last run did not deliver some contacts (the snapshot's retry set), the
tracker counts, once every block is seen, how many of them this run sends again
(``retried``): a lookup of that set alone, never a cost per block.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import xxhash

from shared.exports.state import EMPTY, ExportState, Keys, as_keys, contains, snapshot_arrays
from shared.segments.blocks import part_blocks, part_byte_limit
from shared.segments.layout import Segment

SNAPSHOT_FILE = "snapshot.bin"
"""The candidate snapshot, staged with the run's chunks until the run has succeeded."""
HASH_READ_BYTES = 4 << 20
PART_MARK = b"\0part\0"


@dataclass(frozen=True)
class ChangeCounts:
    incremental: bool
    added: int
    updated: int
    unchanged: int
    left: int
    previous_contacts: int
    retried: int = 0
    """Contacts sent again because ``retried_from`` (the last run) did not deliver them."""
    retried_from: str = ""

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "incremental": self.incremental,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "left": self.left,
            "previous_contacts": self.previous_contacts,
        }
        if self.retried_from:  # only after a run that left contacts to retry
            counts["retried"] = {"contacts": self.retried, "from_run": self.retried_from}
        return counts


class ChangeTracker:
    """Compares blocks of contacts with a snapshot; ``full`` sends them all the same."""

    def __init__(self, previous: ExportState | None, *, full: bool = False) -> None:
        self.old_keys = previous.keys if previous is not None else EMPTY
        self.old_digests = previous.digests if previous is not None else EMPTY
        self.incremental = previous is not None and not full
        # Counted only when comparing: a full run sends everyone whatever the last did.
        self.retry = previous.retry if previous is not None and self.incremental else EMPTY
        self.retry_from = previous.retry_from if previous is not None else ""
        self._seen_old = np.zeros(self.old_keys.size, dtype=bool)
        # Raw 8-byte values as they come: appending costs no per-block array, and the
        # sort at the end reads them in place (16 MB for a million contacts).
        self._keys = bytearray()
        self._digests = bytearray()
        self.added = self.updated = self.unchanged = 0
        self.keys: Keys = EMPTY
        self.digests: Keys = EMPTY

    def select(
        self, items: bytes, ends: array[int], keys: bytes, digests: bytes
    ) -> tuple[bytes, array[int]]:
        """The block's contacts to send (``items``/``ends`` as the chunker takes them)."""
        new_keys, new_digests = as_keys(keys), as_keys(digests)
        if new_keys.size != len(ends) or new_digests.size != len(ends):
            raise ValueError("a block's keys and digests do not match its contacts")
        self._keys += keys
        self._digests += digests
        if not self.old_keys.size:
            self.added += len(ends)
            return items, ends
        at = np.searchsorted(self.old_keys, new_keys)
        at[at == self.old_keys.size] = 0
        found = self.old_keys[at] == new_keys
        same = found & (self.old_digests[at] == new_digests)
        self._seen_old[at[found]] = True
        unchanged = int(same.sum())
        self.unchanged += unchanged
        self.updated += int(found.sum()) - unchanged
        self.added += int((~found).sum())
        if not self.incremental or unchanged == 0:
            return items, ends
        if unchanged == len(ends):
            return b"", array("q")
        view = memoryview(items)
        kept = bytearray()
        kept_ends = array("q")
        for i in np.flatnonzero(~same).tolist():
            kept += view[ends[i - 1] if i else 0 : ends[i]]
            kept_ends.append(len(kept))
        return bytes(kept), kept_ends

    def finish(self) -> ChangeCounts:
        """The counts; ``keys``/``digests`` then hold the segment's snapshot, sorted."""
        if self._keys:
            self.keys, self.digests = snapshot_arrays(as_keys(self._keys), as_keys(self._digests))
        self._keys, self._digests = bytearray(), bytearray()
        left = int((~self._seen_old).sum()) if self.old_keys.size else 0
        return ChangeCounts(
            incremental=self.incremental,
            added=self.added,
            updated=self.updated,
            unchanged=self.unchanged,
            left=left,
            previous_contacts=int(self.old_keys.size),
            retried=self._retried(),
            retried_from=self.retry_from if self.retry.size else "",
        )

    def _retried(self) -> int:
        """Contacts of the retry set that this run sends: in the segment, and new or
        changed against the snapshot (one the segment carries back to its old entry is
        unchanged, so not sent, so not retried)."""
        if not self.retry.size or not self.keys.size:
            return 0
        retry = self.retry[contains(self.keys, self.retry)]
        if not retry.size:
            return 0
        digests = self.digests[np.searchsorted(self.keys, retry)]
        known = contains(self.old_keys, retry)
        at = np.searchsorted(self.old_keys, retry[known])
        same = np.zeros(retry.size, dtype=bool)
        same[known] = self.old_digests[at] == digests[known]
        return int((~same).sum())

    def snapshot(self) -> bytes:
        """The candidate snapshot (no managed sets: those are decided when the run ends)."""
        return ExportState({"candidate": True}, self.keys, self.digests).to_bytes()


# --- what identifies a segment, and whether its files changed -------------------------

_RUN_FOLDER = re.compile(r"(?:^|/)\d{4}/\d{2}/\d{2}/\d{4}$")
_PART_SUFFIX = re.compile(r"(?:_\d+)?\.csv(?:\.gz)?$", re.IGNORECASE)


def segment_names(segment: Segment) -> tuple[str, str]:
    """The Customer Insights export and segment (table) names of a located segment.

    ``<Export>/<Table>/yyyy/MM/dd/HHmm/<Table>_N.csv`` gives (Export, Table) whatever
    the run folder. Files outside that layout are named by their folder and file stem
    (parts ``_1``, ``_2`` ... and the extension dropped), which stay the same from one
    run to the next when a person exports to the same place.
    """
    if not segment.parts:
        return "", segment.describe()
    folder, _, file = segment.parts[0].name.rpartition("/")
    if _RUN_FOLDER.search(folder):
        names = folder.split("/")
        if len(names) >= 5:
            return (names[-6] if len(names) >= 6 else ""), names[-5]
    stem = _PART_SUFFIX.sub("", file)
    return "", f"{segment.store.describe(folder)}/{stem}"


def content_digest(segment: Segment) -> Any:
    """An XXH3-128 digest started with how the segment is read (columns, delimiter,
    encoding); the caller feeds it ``PART_MARK`` and then the part's bytes, for every
    part in order. XXH3 hashes at memory speed: prepare's main process feeds it every
    byte it reads, so a slower hash (BLAKE2b) would show in that process's time."""
    digest = xxhash.xxh3_128()
    digest.update(orjson.dumps([segment.columns, segment.delimiter, segment.encoding]))
    return digest


def content_hash(segment: Segment, *, max_profiles: int) -> str:
    """A hash of the segment's bytes, as prepare reads them (gunzipped, every part in order).

    Names and times are left out on purpose: Customer Insights writes the same
    segment to a new folder each time, and the same bytes there are the same segment.
    prepare makes the same hash as it reads (its summary's ``content_hash``), so an
    unchanged segment is known without being parsed: reading and hashing its bytes is
    all it costs. Each part is read only up to prepare's cap for an export of
    ``max_profiles`` (``part_byte_limit``): one that holds more once decompressed is
    refused with prepare's InputError, in bounded time, not read whole first.
    """
    digest = content_digest(segment)
    max_bytes = part_byte_limit(max_profiles)
    for part in segment.parts:
        digest.update(PART_MARK)
        for block in part_blocks(segment, part, HASH_READ_BYTES, max_bytes=max_bytes):
            digest.update(block.data)
    return str(digest.hexdigest())
