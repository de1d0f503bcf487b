"""The prepare stage's summary: what summary.json says, and what reads it.

Every row read ends in one place, so ``rows_read == contacts + rejected + duplicates``.
A summary comes in two kinds. One made by reading the segment (``read`` is set) tells
how it was read too. One made without reading (the segment is the one the export
last sent: ``read`` is None) repeats the last run's counts and has no chunks.

``to_json`` gives summary.json's layout for each kind, key for key and in order; the
CLI prints it and a run's staging keeps it, so an attempt that finds it reuses what an
earlier attempt prepared. ``from_json`` reads either kind, taking a missing figure as
0 (or empty).

``changes`` (the segment against the export's last snapshot) stays plain JSON here:
its typed form belongs to the runs that act on it (shared.runs.prepared.Changes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChunkFile:
    """One request body written, by its name in the output."""

    name: str
    contacts: int
    bytes: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChunkFile:
        return cls(str(data["name"]), int(data["contacts"]), int(data["bytes"]))


@dataclass(frozen=True)
class PartRows:
    """Rows read from one part (file) of the segment."""

    name: str
    rows: int


@dataclass(frozen=True)
class SegmentRead:
    """How the segment was read: its layout, the cleaning it took, the work it took."""

    model: str | None
    """Where model.json was found (None when the parts carry their own header)."""
    entity: str | None
    parts: tuple[PartRows, ...]
    truncated: Mapping[str, int]
    """Values cut to their field's length (still sent), by field."""
    invalid_values: Mapping[str, int]
    """Values left out (not a valid date), by field."""
    largest_chunk_bytes: int
    max_body_bytes: int
    workers: int
    worker_kind: str
    blocks: int
    columnar_blocks: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SegmentRead:
        return cls(
            model=data.get("model"),
            entity=data.get("entity"),
            parts=tuple(PartRows(str(p["name"]), int(p["rows"])) for p in data.get("parts", ())),
            truncated=dict(data.get("truncated", {})),
            invalid_values=dict(data.get("invalid_values", {})),
            largest_chunk_bytes=int(data.get("largest_chunk_bytes", 0)),
            max_body_bytes=int(data.get("max_body_bytes", 0)),
            workers=int(data.get("workers", 1)),
            worker_kind=str(data.get("worker_kind", "")),
            blocks=int(data.get("blocks", 0)),
            columnar_blocks=int(data.get("columnar_blocks", 0)),
        )


@dataclass(frozen=True)
class PrepareSummary:
    """What one prepare made of a segment: counts and chunk names, never contacts."""

    source: str = ""
    list_ids: tuple[str, ...] = ()
    rows_read: int = 0
    contacts: int = 0
    duplicates: int = 0
    rejected: int = 0
    reject_reasons: Mapping[str, int] = field(default_factory=dict)
    chunks: int = 0
    fewest_chunks_possible: int = 0
    chunk_files: tuple[ChunkFile, ...] = ()
    content_hash: str = ""
    """The segment's bytes, hashed: an unchanged segment is known by it without reading."""
    read: SegmentRead | None = None
    """None when the segment was not read (it is the one the export last sent)."""
    changes: Mapping[str, Any] | None = None
    """Compared with the export's last snapshot (None when there was none to compare)."""
    list_names: Mapping[str, str] | None = None
    """Lists given by name: the bodies carry the names until a run resolves them."""
    elapsed_seconds: float | None = None

    def counts(self) -> dict[str, Any]:
        """The counts an export's state keeps, for a later unchanged segment to repeat."""
        return {
            "rows_read": self.rows_read,
            "contacts": self.contacts,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "reject_reasons": dict(self.reject_reasons),
        }

    def to_json(self) -> dict[str, Any]:
        files = [asdict(c) for c in self.chunk_files]
        chunks = {"chunks": self.chunks, "fewest_chunks_possible": self.fewest_chunks_possible}
        read = self.read
        data: dict[str, Any]
        if read is None:
            data = {
                "source": self.source,
                "list_ids": list(self.list_ids),
                **self.counts(),
                **chunks,
                "chunk_files": files,
                "content_hash": self.content_hash,
            }
        else:
            data = {
                "source": self.source,
                "model": read.model,
                "entity": read.entity,
                "parts": [asdict(p) for p in read.parts],
                "list_ids": list(self.list_ids),
                **self.counts(),
                "truncated": dict(read.truncated),
                "invalid_values": dict(read.invalid_values),
                **chunks,
                "largest_chunk_bytes": read.largest_chunk_bytes,
                "max_body_bytes": read.max_body_bytes,
                "content_hash": self.content_hash,
                "workers": read.workers,
                "worker_kind": read.worker_kind,
                "blocks": read.blocks,
                "columnar_blocks": read.columnar_blocks,
                "chunk_files": files,
            }
        if self.changes is not None:
            data["changes"] = dict(self.changes)
        if self.list_names is not None:
            data["list_names"] = dict(self.list_names)
        if self.elapsed_seconds is not None:
            data["elapsed_seconds"] = self.elapsed_seconds
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PrepareSummary:
        names = data.get("list_names")
        elapsed = data.get("elapsed_seconds")
        return cls(
            source=str(data.get("source", "")),
            list_ids=tuple(data.get("list_ids", ())),
            rows_read=int(data.get("rows_read", 0)),
            contacts=int(data.get("contacts", 0)),
            duplicates=int(data.get("duplicates", 0)),
            rejected=int(data.get("rejected", 0)),
            reject_reasons=dict(data.get("reject_reasons", {})),
            chunks=int(data.get("chunks", 0)),
            fewest_chunks_possible=int(data.get("fewest_chunks_possible", 0)),
            chunk_files=tuple(ChunkFile.from_json(c) for c in data.get("chunk_files", ())),
            content_hash=str(data.get("content_hash", "")),
            read=SegmentRead.from_json(data) if "entity" in data else None,
            changes=data.get("changes"),
            list_names=None if names is None else dict(names),
            elapsed_seconds=None if elapsed is None else float(elapsed),
        )
