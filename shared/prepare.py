"""The prepare stage: segment files in, import request bodies and an account of every row out.

One streaming pass: read a row, map and validate it, drop it as a duplicate or pack it
into the current request body. Every row read ends in exactly one place, so

    rows_read == contacts + rejected + duplicates

holds for every summary; ``prepare`` checks it before it reports success.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shared.chunks import DEFAULT_MAX_BODY_BYTES, ChunkInfo, JsonChunker
from shared.contacts import DUPLICATE, ContactMapper
from shared.errors import CcexportError, InputError
from shared.exports import ExportDefinition
from shared.outputs import PreparedOutput, RejectsWriter, chunk_name
from shared.segments import Segment, SegmentReader

ProgressCallback = Callable[[int], None]
PROGRESS_EVERY = 50_000


@dataclass(frozen=True)
class PrepareResult:
    summary: dict[str, Any]
    chunks: list[ChunkInfo]
    location: str


def prepare(
    segment: Segment,
    export: ExportDefinition,
    output: PreparedOutput,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    progress: ProgressCallback | None = None,
) -> PrepareResult:
    """Run the stage; on any error nothing is left in output and the error is raised."""
    started = time.perf_counter()
    try:
        summary, chunks = _run(segment, export, output, max_body_bytes, progress)
        summary["elapsed_seconds"] = round(time.perf_counter() - started, 3)
        location = output.commit(summary)
    except BaseException:
        output.abort()
        raise
    return PrepareResult(summary, chunks, location)


def _run(
    segment: Segment,
    export: ExportDefinition,
    output: PreparedOutput,
    max_body_bytes: int,
    progress: ProgressCallback | None,
) -> tuple[dict[str, Any], list[ChunkInfo]]:
    reader = SegmentReader(segment)
    columns, parts = reader.open()
    if not columns:
        # Every part is empty and no model.json names columns: there is no row to map,
        # and an empty segment is a valid export, so check the mapping against itself.
        columns = tuple(dict.fromkeys(export.mapping.values()))
    mapper = ContactMapper(columns, export.mapping)  # fails here on a missing column
    chunker = JsonChunker(export.list_ids, output.write_chunk, max_bytes=max_body_bytes)
    rejects = RejectsWriter(output.rejects_stream())
    seen: dict[str, int] = {}  # email -> the row that carries it
    reasons: Counter[str] = Counter()
    part_stats: list[dict[str, Any]] = []
    rows_read = rejected = duplicates = 0
    limit = export.max_profiles
    report_every = PROGRESS_EVERY if progress is not None else limit + 1
    checkpoint = min(limit + 1, report_every)  # one comparison a row covers both
    # The hot loop: locals only, no per-row objects beyond the contact itself.
    to_contact, add, dumps, setdefault = mapper.map, chunker.add, orjson.dumps, seen.setdefault
    for part in parts:
        where = part.where
        part_first_row = rows_read + 1
        with part:
            line = 1
            for values in part.records:
                start_line, line = line, part.line + 1
                if not values:
                    continue  # a blank line is not a record
                rows_read += 1
                if rows_read >= checkpoint:
                    if rows_read > limit:
                        raise InputError(
                            f"the export has more than {limit:,} profiles, its limit: raise "
                            "max_profiles in the export definition (or --max-profiles), "
                            "or split the segment"
                        )
                    if progress is not None:
                        progress(rows_read)
                    checkpoint = min(limit + 1, rows_read + report_every)
                contact = to_contact(values)
                if contact is None:
                    rejected += 1
                    reasons[mapper.reason or ""] += 1
                    rejects.write(
                        row=rows_read,
                        file=where,
                        line=start_line,
                        email=mapper.email,
                        reason=mapper.reason or "",
                        detail=mapper.detail,
                    )
                    continue
                first = setdefault(mapper.email, rows_read)
                if first != rows_read:
                    duplicates += 1
                    rejects.write(
                        row=rows_read,
                        file=where,
                        line=start_line,
                        email=mapper.email,
                        reason=DUPLICATE,
                        detail=f"same email as row {first}",
                    )
                    continue
                add(dumps(contact))
        part_stats.append({"name": where, "rows": rows_read - part_first_row + 1})
    chunks = chunker.close()
    if progress is not None:
        progress(rows_read)
    contacts = chunker.contacts
    if rows_read != contacts + rejected + duplicates:  # an invariant, not user input
        raise CcexportError(
            f"internal error: {rows_read} rows read but {contacts} contacts, "
            f"{rejected} rejected and {duplicates} duplicates"
        )
    summary: dict[str, Any] = {
        "source": segment.describe(),
        "model": segment.store.describe(segment.model) if segment.model else None,
        "entity": segment.entity,
        "parts": part_stats,
        "list_ids": list(export.list_ids),
        "rows_read": rows_read,
        "contacts": contacts,
        "duplicates": duplicates,
        "rejected": rejected,
        "reject_reasons": dict(sorted(reasons.items())),
        "truncated": dict(sorted(mapper.truncated.items())),
        "invalid_values": dict(sorted(mapper.invalid.items())),
        "chunks": len(chunks),
        "fewest_chunks_possible": chunker.fewest_possible(),
        "largest_chunk_bytes": max((c.bytes for c in chunks), default=0),
        "max_body_bytes": max_body_bytes,
        "chunk_files": [
            {"name": chunk_name(c.index), "contacts": c.contacts, "bytes": c.bytes} for c in chunks
        ],
    }
    return summary, chunks
