"""What an export remembers between runs: its last snapshot and the members it added.

Keyed by the export, never by a run folder: Customer Insights writes a new, newer
folder for every run, so a key made of paths would forget everything each time. The
key is the definition's name (or, for a command-line run without a definition, its
list ids) plus the Customer Insights export and segment (table) names, because one
definition may match several tables and each is a segment of its own
(:func:`state_key`).

One state is one file, written whole when a run ends having delivered something (a
failed run leaves the previous one; a partly delivered one records only what it
delivered: shared/runs/next_state.py), so a reader sees the old state or the new one,
never a mix::

    b"CCXSTATE2\\n" | u32 header length | header JSON | arrays (little-endian uint64)

The arrays: the snapshot's email keys (sorted) and, in the same order, the contact
digests; then, per list of the header, the keys of the members this export added
(the "managed" set, sorted); last, the keys of the contacts the run that wrote the
state did not deliver (the "retry" set, sorted; header ``retry_from`` names that run,
``retry_count`` their number), which the next run counts as retried when it sends
them. A reader that knows no retry set stops before it: the file is otherwise the
same. 1,000,000 contacts take 16 MB on disk and in memory.

Keys and digests are 64-bit XXH3 hashes: of the normalised email, and of the
contact exactly as it is sent (its JSON). Two different emails with the same key (a
chance of about 3 in 100 million for a million contacts) cannot be told apart: the
segment's second one is always sent, neither is recorded (:mod:`shared.exports.changes`),
and a removal could pick the wrong one of two members only if a leaver's key equals
another member's (about 5 in 10^14 per leaver), which the removal share check bounds.

The header carries what a later run needs without the arrays: the definition and
content hashes (to skip an unchanged segment), the counts of the last run (to report
them again), a generation token (two runs of one export finishing in the wrong order
cannot overwrite each other: the later writer sees another generation and keeps the
state it found), and the lists with how many members each manages.

Where: ``CCEXPORT_HOME/state/<key>.bin`` locally; in Blob Storage, the blob
``_state/<key>.bin`` in the reports container (run ids cannot start with ``_``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from shared.errors import CcexportError
from shared.exports.definitions import ExportDefinition
from shared.exports.keys import hash8
from shared.storage.atomic import write_atomically

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

MAGIC = b"CCXSTATE2\n"
STATE_PREFIX = "_state"
STATE_FOLDER = "state"
HEADER_READ_BYTES = 64 * 1024
"""Enough to read a header alone (it holds at most 50 lists): finding which other
exports share a list reads headers, not whole snapshots."""

Keys = npt.NDArray[np.uint64]
EMPTY: Keys = np.zeros(0, dtype=np.uint64)
_LE = np.dtype("<u8")
_SLUG = re.compile(r"[^a-z0-9]+")


class StateError(CcexportError):
    """A state file that cannot be read (it is then ignored: the run sends everything)."""


def email_key(email: str) -> bytes:
    """The 8-byte key of a normalised email (what snapshots and managed sets hold); the
    same hash the prepare workers make (shared/prepare/rows.py)."""
    return hash8(email.encode())


def email_keys(emails: Iterable[str]) -> Keys:
    """Keys of many emails, as an array (the per-email work is at C speed)."""
    raw = b"".join(map(email_key, emails))
    return np.frombuffer(raw, dtype=_LE).astype(np.uint64)


def as_keys(raw: bytes | bytearray) -> Keys:
    """8-byte little-endian keys or digests, as they come from the workers (no copy on a
    little-endian machine)."""
    return np.frombuffer(raw, dtype=_LE).astype(np.uint64, copy=False)


def definition_hash(export: ExportDefinition) -> str:
    """What a snapshot's digests depend on: a change here makes every contact 'changed'.

    The lists (a contact unchanged for list A was never sent to a new list B), the
    mapping (it decides the JSON) and the encoding. Not the name, the mode or limits.
    """
    data = {
        "list_ids": sorted(export.list_ids),
        "mapping": sorted(export.mapping.items()),
        "encoding": (export.encoding or "").lower(),
    }
    return hashlib.blake2b(orjson.dumps(data), digest_size=16).hexdigest()


def state_key(name: str | None, list_ids: Sequence[str], export: str, table: str) -> str:
    """The export's state key: readable prefix, then a hash of what identifies it.

    ``export`` and ``table`` are the Customer Insights export and segment names (or,
    outside that layout, "" and the file's folder and stem); case does not matter.
    """
    identity: list[Any] = [name or "", [] if name else sorted(list_ids)]
    identity += [export.casefold(), table.casefold()]
    digest = hashlib.blake2b(orjson.dumps(identity), digest_size=10).hexdigest()
    readable = _SLUG.sub("-", f"{name or 'lists'}-{table}".lower()).strip("-")[:60]
    return f"{readable}-{digest}"


def _sorted_unique(keys: Keys) -> Keys:
    return np.unique(keys) if keys.size else EMPTY


def contains(sorted_keys: Keys, keys: Keys) -> npt.NDArray[np.bool_]:
    """For each of ``keys``: whether it is in ``sorted_keys`` (sorted ascending)."""
    if not sorted_keys.size or not keys.size:
        return np.zeros(keys.shape, dtype=bool)
    at = np.searchsorted(sorted_keys, keys)
    at[at == sorted_keys.size] = 0
    found: npt.NDArray[np.bool_] = sorted_keys[at] == keys
    return found


@dataclass
class ExportState:
    """One export's state: the header, the snapshot, and the managed set per list."""

    header: dict[str, Any]
    keys: Keys = field(default_factory=lambda: EMPTY)  # sorted
    digests: Keys = field(default_factory=lambda: EMPTY)  # aligned with keys
    managed: dict[str, Keys] = field(default_factory=dict)  # list id -> sorted keys
    retry: Keys = field(default_factory=lambda: EMPTY)  # sorted; see retry_from
    """Contacts the run named by ``retry_from`` did not deliver: its snapshot keeps their
    old entries (or lacks them), so the next run sends them again and reports them."""

    @property
    def generation(self) -> str:
        return str(self.header.get("generation", ""))

    @property
    def retry_from(self) -> str:
        """The run that left the retry set ("" when there is none)."""
        return str(self.header.get("retry_from") or "") if self.retry.size else ""

    @property
    def contacts(self) -> int:
        return int(self.keys.size)

    def managed_in(self, list_id: str) -> Keys:
        return self.managed.get(list_id, EMPTY)

    def pending_removals(self) -> int:
        """Managed members no longer in the snapshot (kept back, e.g. for another export)."""
        return sum(int((~contains(self.keys, m)).sum()) for m in self.managed.values())

    def to_bytes(self) -> bytes:
        header = dict(self.header)
        lists = sorted(self.managed)
        header["contacts"] = self.contacts
        header["lists"] = [{"list_id": i, "managed": int(self.managed[i].size)} for i in lists]
        header["retry_count"] = int(self.retry.size)
        if not self.retry.size:
            header.pop("retry_from", None)
        head = orjson.dumps(header)
        arrays = [self.keys, self.digests, *(self.managed[i] for i in lists), self.retry]
        # joined from the arrays' own buffers: one copy, the result
        views = [np.ascontiguousarray(a, dtype=_LE).data.cast("B") for a in arrays]
        return b"".join([MAGIC, struct.pack("<I", len(head)), head, *views])

    @classmethod
    def from_bytes(cls, data: bytes, *, header_only: bool = False) -> ExportState:
        header = read_header(data)
        if header_only:
            return cls(header)
        offset = len(MAGIC) + 4 + struct.unpack_from("<I", data, len(MAGIC))[0]
        count = int(header.get("contacts", 0))

        def take(n: int) -> Keys:
            nonlocal offset
            if offset + 8 * n > len(data):
                raise StateError("the state file is cut short")
            out = np.frombuffer(data, dtype=_LE, count=n, offset=offset).astype(np.uint64)
            offset += 8 * n
            return out

        keys, digests = take(count), take(count)
        managed = {str(e["list_id"]): take(int(e["managed"])) for e in header.get("lists", [])}
        retry = take(int(header.get("retry_count") or 0))
        return cls(header, keys, digests, managed, retry)

    @classmethod
    def new(cls, key: str) -> ExportState:
        return cls({"key": key, "generation": ""})

    def successor(self, **header: Any) -> ExportState:
        """A copy with a fresh generation, the header fields given, the same arrays."""
        fresh = {**self.header, **header, "generation": secrets.token_hex(8)}
        return ExportState(fresh, self.keys, self.digests, dict(self.managed), self.retry)


def read_header(data: bytes) -> dict[str, Any]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise StateError("not an export state file")
    size = struct.unpack_from("<I", data, len(MAGIC))[0]
    start = len(MAGIC) + 4
    if start + size > len(data):
        raise StateError("the state file's header is cut short")
    header = orjson.loads(data[start : start + size])
    if not isinstance(header, dict):
        raise StateError("the state file's header is not an object")
    return header


def snapshot_arrays(keys: Keys, digests: Keys) -> tuple[Keys, Keys]:
    """Keys sorted with their digests; keys seen twice (collisions) are left out."""
    order = np.argsort(keys)
    keys, digests = keys[order], digests[order]
    del order
    if keys.size > 1:
        twice = np.zeros(keys.size, dtype=bool)
        same = keys[1:] == keys[:-1]
        twice[1:] |= same
        twice[:-1] |= same
        if twice.any():
            keys, digests = keys[~twice], digests[~twice]
    return keys, digests


def union(*sets: Keys) -> Keys:
    joined = [s for s in sets if s.size]
    return _sorted_unique(np.concatenate(joined)) if joined else EMPTY


def difference(left: Keys, right: Keys) -> Keys:
    """Keys of sorted ``left`` that are not in sorted ``right``."""
    return left[~contains(right, left)] if left.size else EMPTY


def delivered_snapshot(
    old: ExportState | None, staged: ExportState, undelivered: Keys
) -> tuple[Keys, Keys]:
    """The snapshot a partly delivered run leaves: ``staged`` (the segment as this run
    read it) except the ``undelivered`` keys (sorted), which keep ``old``'s entry, or
    stay out when ``old`` has none. So the next run finds exactly those contacts new or
    changed and sends them again, and not the ones Constant Contact took.

    ``old`` must be a snapshot made under the same definition (else its digests mean
    something else: pass None, and the undelivered contacts are all sent again).
    Contacts of ``old`` that left the segment are dropped, as a completed run drops them.
    Applying it twice with its own result as ``old`` gives the same snapshot (a retried
    finish writes what the first attempt wrote).
    """
    sent = ~contains(undelivered, staged.keys)
    keys, digests = staged.keys[sent], staged.digests[sent]
    if old is None or not old.keys.size or not undelivered.size:
        return keys, digests
    kept = contains(undelivered, old.keys)
    if not kept.any():
        return keys, digests
    keys = np.concatenate([keys, old.keys[kept]])
    digests = np.concatenate([digests, old.digests[kept]])
    order = np.argsort(keys, kind="stable")
    return keys[order], digests[order]


# --- where states live ---------------------------------------------------------------


class StateStore(Protocol):
    def describe(self, key: str) -> str: ...

    def read(self, key: str, *, header_only: bool = False) -> bytes | None:
        """The state file (or enough of its beginning for the header), None if none."""

    def write(self, key: str, data: bytes) -> None:
        """Replace the state whole (readers see the old file or the new one)."""

    def export_keys(self) -> list[str]:
        """Every export with a state."""


class LocalStateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.bin"

    def describe(self, key: str) -> str:
        return str(self._path(key))

    def read(self, key: str, *, header_only: bool = False) -> bytes | None:
        try:
            with self._path(key).open("rb") as fh:
                return fh.read(HEADER_READ_BYTES) if header_only else fh.read()
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)

    def export_keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.bin"))


class BlobStateStore:
    """States as blobs ``_state/<key>.bin`` (one upload commits a blob whole).

    The Azure SDK is imported in the methods that use it: a local state store (prepare
    on local files) never pays its memory.
    """

    def __init__(self, container: ContainerClient, prefix: str = STATE_PREFIX) -> None:
        self.container = container
        self.prefix = prefix
        self._ready = False

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}.bin"

    def describe(self, key: str) -> str:
        return f"az://{self.container.container_name}/{self._name(key)}"

    def read(self, key: str, *, header_only: bool = False) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        length = HEADER_READ_BYTES if header_only else None
        try:
            return self.container.download_blob(
                self._name(key), offset=0 if length else None, length=length, max_concurrency=2
            ).readall()
        except ResourceNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        from azure.core.exceptions import ResourceExistsError  # noqa: PLC0415 - blob only
        from azure.storage.blob import ContentSettings  # noqa: PLC0415

        if not self._ready:
            with contextlib.suppress(ResourceExistsError):
                self.container.create_container()
            self._ready = True
        self.container.upload_blob(
            self._name(key),
            data,
            overwrite=True,
            max_concurrency=2,
            content_settings=ContentSettings(content_type="application/octet-stream"),
        )

    def export_keys(self) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        found: list[str] = []
        with contextlib.suppress(ResourceNotFoundError):
            for blob in self.container.list_blobs(name_starts_with=f"{self.prefix}/"):
                name = blob.name[len(self.prefix) + 1 :]
                if name.endswith(".bin") and "/" not in name:
                    found.append(name[: -len(".bin")])
        return sorted(found)


def load(store: StateStore, key: str) -> ExportState | None:
    """The export's state; None when there is none or it cannot be read (logged by the
    caller as a full run: a lost state costs a resend, never a wrong removal)."""
    data = store.read(key)
    if data is None:
        return None
    return ExportState.from_bytes(data)


def others_sharing(store: StateStore, key: str, list_ids: Sequence[str]) -> Mapping[str, list[str]]:
    """Other exports' state keys whose lists include any of ``list_ids``, by list."""
    wanted = set(list_ids)
    found: dict[str, list[str]] = {list_id: [] for list_id in list_ids}
    for other in store.export_keys():
        if other == key:
            continue
        head = store.read(other, header_only=True)
        if head is None:
            continue
        try:
            header = read_header(head)
        except StateError:
            continue
        for entry in header.get("lists", []):
            list_id = str(entry.get("list_id", ""))
            if list_id in wanted:
                found[list_id].append(other)
        for list_id in header.get("list_ids", []):
            if list_id in wanted and other not in found[list_id]:
                found[list_id].append(other)
    return found
