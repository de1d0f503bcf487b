"""What ``prepare_segment`` gives the orchestrator: references to staged bodies, and counts.

Contacts never travel through the orchestrator: a ``PreparedRun`` names the chunk
bodies staged in the run store and counts the rows, and ``Changes`` says how the
segment compares with the export's last snapshot. A run may have 0 chunks (nothing
new or changed): it completes without an import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChunkRef:
    """One staged request body: a name in the run's staging area, and its figures."""

    index: int
    name: str
    contacts: int
    bytes: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChunkRef:
        return cls(int(data["index"]), str(data["name"]), int(data["contacts"]), int(data["bytes"]))


@dataclass(frozen=True)
class Changes:
    """The segment against the export's last snapshot (shared/exports/changes.py)."""

    state_key: str = ""
    mode: str = "add"
    incremental: bool = False
    """A snapshot was there to compare with (and the run was not ``full``)."""
    added: int = 0
    """Contacts not in the last snapshot."""
    updated: int = 0
    """Contacts in it whose mapped values changed."""
    unchanged: int = 0
    """Contacts exactly as last sent: not sent again."""
    left: int = 0
    """Contacts of the last snapshot that are not in this segment."""
    previous_contacts: int = 0
    removal_candidates: int = 0
    """Members this export added that are not in the segment (over its lists): what a
    mirror run would remove, before the lists are looked at."""
    content_unchanged: bool = False
    """The files and the definition are the ones of the last snapshot: nothing was read."""
    needs_members: bool = False
    """A mirror run must look at the lists (new contacts or removal candidates)."""
    sent: int = 0
    """Contacts packed into chunks (new and changed, or all in a full run)."""
    generation: str = ""
    """The generation of the state compared with (shared/exports/state.py)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Changes:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass(frozen=True)
class PreparedRun:
    """``prepare_segment``'s result: references and counts, never contacts.

    ``error`` is set (and ``chunks`` empty) when the input cannot be exported as it
    is: a missing column, an unreadable file. Retrying would not help, so it is a
    result, not a raised error.
    """

    run_id: str
    chunks: tuple[ChunkRef, ...] = ()
    source: str = ""
    staging: str = ""
    rows_read: int = 0
    contacts: int = 0
    duplicates: int = 0
    rejected: int = 0
    reject_reasons: Mapping[str, int] = field(default_factory=dict)
    fewest_chunks_possible: int = 0
    reused: bool = False
    """True when an earlier attempt of this run had already prepared everything."""
    error: str | None = None
    changes: Changes = field(default_factory=Changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunks"] = [asdict(c) for c in self.chunks]
        data["reject_reasons"] = dict(self.reject_reasons)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparedRun:
        values = dict(data)
        values["chunks"] = tuple(ChunkRef.from_json(c) for c in data.get("chunks", ()))
        values["reject_reasons"] = dict(data.get("reject_reasons", {}))
        values["changes"] = Changes.from_json(data.get("changes"))
        return cls(**values)
