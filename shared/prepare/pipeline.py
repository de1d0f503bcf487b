"""The prepare stage: segment files in, import request bodies and an account of every row out.

The parts are cut into blocks (shared/segments/blocks.py); workers map, validate and serialise
the blocks (shared/prepare/rows.py) while this thread takes their results in file
order: it finds duplicates across blocks, packs the contacts into request bodies and
writes the rejects. Blocks for the columnar path go to threads (Arrow lets go of the
GIL), the others to processes (shared/prepare/workers.py).
Every row read ends in exactly one place, so

    rows_read == contacts + rejected + duplicates

holds for every summary; ``prepare`` checks it before it reports success. A small
input (one block) starts no worker; ``workers=1`` keeps everything in this thread.

Given a ``ChangeTracker`` (shared/exports/changes.py), only contacts new or changed since the
export's last snapshot are packed; the summary's ``changes`` counts them, and the
segment's own snapshot is staged beside the chunks (``snapshot.bin``).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import BrokenExecutor, Future
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from shared.constant_contact.contacts import DUPLICATE, ContactMapper
from shared.errors import CcexportError, InputError
from shared.exports.changes import PART_MARK, SNAPSHOT_FILE, ChangeTracker, content_digest
from shared.exports.definitions import ExportDefinition, list_names
from shared.prepare.chunks import DEFAULT_MAX_BODY_BYTES, ChunkInfo, JsonChunker
from shared.prepare.outputs import PreparedOutput, RejectsWriter, chunk_name
from shared.prepare.results import BlockResult
from shared.prepare.rows import map_block
from shared.prepare.seen_keys import SeenKeys
from shared.prepare.summary import ChunkFile, PartRows, PrepareSummary, SegmentRead
from shared.prepare.workers import BlockWorkers
from shared.segments.blocks import (
    BLOCK_BYTES,
    FIELD_SIZE_LIMIT,
    Block,
    first_record,
    part_blocks,
    part_byte_limit,
    records,
)
from shared.segments.layout import Segment

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int], None]
DescribeChanges = Callable[[dict[str, Any]], dict[str, Any]]
MAX_WORKERS = 2  # the Constant Contact side, not CPU, bounds a run past two cores


@dataclass(frozen=True)
class PrepareResult:
    prepared: PrepareSummary
    chunks: list[ChunkInfo]
    location: str

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json, as written."""
        return self.prepared.to_json()


def default_workers() -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def prepare(
    segment: Segment,
    export: ExportDefinition,
    output: PreparedOutput,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    block_bytes: int = BLOCK_BYTES,
    fast: bool = True,
    changes: ChangeTracker | None = None,
    describe_changes: DescribeChanges | None = None,
) -> PrepareResult:
    """Run the stage; on any error nothing is left in output and the error is raised.

    ``fast`` lets plainly clean blocks take the columnar path (shared/prepare/columnar.py):
    the same output for much less CPU, at the cost of Arrow's memory in each process
    that loads it.

    ``describe_changes`` may add to the summary's ``changes`` once the tracker has
    seen every contact (the run adds the export's state key and its mode).
    """
    started = time.perf_counter()
    try:
        summary, chunks = _run(
            segment, export, output, max_body_bytes=max_body_bytes, progress=progress,
            workers=default_workers() if workers is None else max(1, workers),
            block_bytes=block_bytes, fast=fast, changes=changes,
            describe_changes=describe_changes,
        )  # fmt: skip
        summary = replace(summary, elapsed_seconds=round(time.perf_counter() - started, 3))
        location = output.commit(summary.to_json())
    except BaseException:
        output.abort()
        raise
    return PrepareResult(summary, chunks, location)


class _SegmentBlocks:
    """The blocks of every part in order, each marked when its first record is a header.

    ``columns`` is known once the first block has been taken: from model.json, or
    from the first part's header row when there is no model.json.
    """

    def __init__(self, segment: Segment, size: int, max_part_bytes: int | None = None) -> None:
        self.segment = segment
        self.columns: tuple[str, ...] | None = segment.columns
        self.first_row: list[str] | None = None  # what ``columns`` came from, without model.json
        self.parts = {segment.store.describe(p.name): 0 for p in segment.parts}
        self.content = content_digest(segment)
        self._max_part_bytes = max_part_bytes
        self._blocks = self._all(size)

    def __iter__(self) -> Iterator[Block]:
        return self._blocks

    def _all(self, size: int) -> Iterator[Block]:
        for part in self.segment.parts:
            self.content.update(PART_MARK)
            blocks = part_blocks(self.segment, part, size, max_bytes=self._max_part_bytes)
            first = next(blocks, None)
            if first is None:
                continue  # an empty part
            self.content.update(first.data)
            yield replace(first, skip_header=self._is_header(first, part.header))
            for block in blocks:
                self.content.update(block.data)
                yield block

    def _is_header(self, block: Block, declared: bool | None) -> bool:
        first = first_record(block)
        if first is None:
            return False
        if self.segment.columns is None:  # no model.json: each part has its own header row
            names = tuple(v.strip() for v in first)
            if self.columns is None:
                self.columns = names
                self.first_row = list(first)
            elif names != self.columns:
                raise InputError(f"{block.where}: its header row differs from the first part's")
            return True
        columns = self.segment.columns
        if len(first) != len(columns):
            raise InputError(
                f"{block.where} has {len(first)} columns but {self.segment.model} lists "
                f"{len(columns)} for {self.segment.entity}: the file and model.json do not match"
            )
        if declared is not None:
            return declared
        return [v.strip().lower() for v in first] == [c.lower() for c in columns]


# A value that could be a column name: what Customer Insights and spreadsheets write.
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ .()\-]{0,127}")
_NUMBER = re.compile(r"[-+]?[0-9][0-9.,:/ -]*")
_EMAIL_COLUMN = re.compile(r"e[-_ ]?mail", re.IGNORECASE)


def is_certainly_header(row: Sequence[str], mapping: Mapping[str, str]) -> bool:
    """Whether a first row is a header beyond doubt: every value could be a column name
    and one of them is a column the mapping names, or an email column's name (a data row
    holds the address itself, and an address has an '@'). Only such a row may be quoted
    in an error; any other first row may be a person's data."""
    names = [value.strip() for value in row]
    if not all(_COLUMN_NAME.fullmatch(name) for name in names):
        return False
    mapped = {column.casefold() for column in mapping.values()}
    return any(name.casefold() in mapped or _EMAIL_COLUMN.search(name) for name in names)


def _headerless(segment: Segment, row: Sequence[str], mapping: Mapping[str, str]) -> InputError:
    """The missing-column error when the columns came from a first row that may be data:
    it says what the row is like, never what it holds."""
    values = [value.strip() for value in row]
    emails = sum("@" in value for value in values)
    numbers = sum(bool(_NUMBER.fullmatch(value)) for value in values)
    seen = [_count(len(values), "value", "values")]
    if emails:
        seen.append(_of_them(emails, "an email address", "email addresses"))
    if numbers:
        seen.append(_of_them(numbers, "a number or a date", "numbers or dates"))
    looks = "looks like data" if emails or numbers else "names none of the mapped columns"
    wanted = ", ".join(f'"{c}"' for c in dict.fromkeys(mapping.values()))
    return InputError(
        f"{segment.describe()}: without model.json the first row must name the columns, "
        f"but it {looks} ({', '.join(seen)}); the mapping needs {wanted}: add a header row, "
        "or put the export's model.json above the run folder"
    )


def _count(n: int, one: str, many: str) -> str:
    return f"1 {one}" if n == 1 else f"{n} {many}"


def _of_them(n: int, one: str, many: str) -> str:
    return f"one of them {one}" if n == 1 else f"{n} of them {many}"


class Workers(Protocol):
    """What maps blocks away from this thread (shared/prepare/workers.py; tests break it)."""

    def submit(self, block: Block) -> Future[BlockResult]: ...


def _ordered_results(
    blocks: Iterator[Block],
    mapper: ContactMapper,
    workers: list[Workers],
    depth: int,
    *,
    fast: bool = True,
) -> Iterator[tuple[Block, BlockResult]]:
    """Block results in file order, at most depth blocks in flight.

    Workers are a speed-up, never a dependency: if the pool breaks (a worker process
    killed, or a host where child processes cannot start), the blocks still in
    flight and all that follow are mapped in this process instead (``workers`` is
    emptied then, so the caller can tell).
    """

    def start(block: Block) -> tuple[Block, Future[BlockResult] | None]:
        if not workers:
            return block, None
        try:
            return block, workers[0].submit(block)
        except BrokenExecutor:
            _give_up_on_workers(workers)
            return block, None

    def finish(block: Block, handle: Future[BlockResult] | None) -> BlockResult:
        if handle is not None:
            try:
                return handle.result()
            except BrokenExecutor:
                _give_up_on_workers(workers)
        return map_block(mapper, block, fast=fast)

    window = deque(start(b) for b in itertools.islice(blocks, depth))
    while window:
        block, handle = window.popleft()
        result = finish(block, handle)
        while result.open_quote:  # the cut fell inside quotes: join with the next blocks
            if len(block.data) > FIELD_SIZE_LIMIT:
                raise InputError(
                    f"{block.where}: a quoted value that starts on line {block.first_line} or "
                    f"after it runs on past {FIELD_SIZE_LIMIT >> 20} MB (an unbalanced quote?)"
                )
            # Double the block each time (up to just past the limit), so a long quoted
            # value is parsed a few times over, not once per block it spans.
            wanted = min(2 * len(block.data), FIELD_SIZE_LIMIT + 1)
            while len(block.data) < wanted and not block.last:
                following = window.popleft()[0] if window else next(blocks)
                block = block.join(following)
            result = finish(*start(block))
        yield block, result
        for nxt in itertools.islice(blocks, 1):
            window.append(start(nxt))


def _give_up_on_workers(workers: list[Workers]) -> None:
    if workers:
        log.warning("prepare: the workers stopped; mapping the rest in this thread")
        workers.clear()


class _Merge:
    """Takes block results in order: cross-block duplicates, chunks, rejects, counts.

    Duplicates across blocks are found by the 64-bit XXH3 key each worker computes
    for an email (the key the export's snapshot uses too), not by the address: no
    address is hashed, split or kept here, which halves this process's memory and
    time. Two different addresses with the same key (about 3 in 100 million for a
    million contacts) would be taken for one: the later row is then listed in the
    rejects file as a duplicate, visibly, never dropped unseen. Within a block the
    workers compare the addresses themselves.
    """

    def __init__(
        self, export: ExportDefinition, chunker: JsonChunker, rejects: RejectsWriter,
        parts: dict[str, int], progress: ProgressCallback | None,
        *, changes: ChangeTracker | None = None,
    ) -> None:  # fmt: skip
        self.limit = export.max_profiles
        self.changes = changes
        self.chunker = chunker
        self.rejects = rejects
        self.parts = parts
        self.progress = progress
        self.seen = SeenKeys()
        self.rows_read = self.rejected = self.duplicates = 0
        self.blocks = self.columnar_blocks = 0
        self.reasons: Counter[str] = Counter()
        self.truncated: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()

    def add(self, block: Block, result: BlockResult) -> None:
        if result.error is not None:
            raise result.error
        base = self.rows_read
        if base + result.records > self.limit:
            raise InputError(
                f"the export has more than {self.limit:,} profiles, its limit: raise "
                "max_profiles in the export definition (or --max-profiles), or split the segment"
            )
        rows: list[tuple[int, int, str, str, str]] = []
        for r in result.rejects:
            detail = f"same email as row {base + r.duplicate_of}" if r.duplicate_of else r.detail
            rows.append((base + r.record, r.line, r.email, r.reason, detail))
        items, ends, numbers = result.items, result.ends, result.rows
        hashes, digests = result.keys, result.digests
        keys = np.frombuffer(hashes, dtype=np.uint64)
        firsts = self.seen.lookup(keys)
        if firsts.any():  # rare
            items, ends, numbers, hashes, digests = self._drop_seen(
                firsts, result, block, base, rows
            )
            keys = keys[firsts == 0]
        self.seen.add(keys, np.frombuffer(numbers, dtype=np.int64) + base)
        for row, line, email, reason, detail in sorted(rows):
            self.rejects.write(row=row, file=block.where, line=line, email=email,
                               reason=reason, detail=detail)  # fmt: skip
            if reason == DUPLICATE:
                self.duplicates += 1
            else:
                self.rejected += 1
                self.reasons[reason] += 1
        if self.changes is not None:
            items, ends = self.changes.select(items, ends, hashes, digests)
        self.chunker.add_items(items, ends)
        self.truncated.update(result.truncated)
        self.invalid.update(result.invalid)
        self.rows_read += result.records
        self.blocks += 1
        self.columnar_blocks += result.columnar
        self.parts[block.where] += result.records
        if self.progress is not None:
            self.progress(self.rows_read)

    def _drop_seen(
        self, firsts: np.ndarray, result: BlockResult, block: Block, base: int,
        rows: list[tuple[int, int, str, str, str]],
    ) -> tuple[bytes, array[int], array[int], bytes, bytes]:  # fmt: skip
        """Take out contacts whose email an earlier block already had (rare).

        ``firsts`` holds, for each contact of the block, the row that first had its
        email, or 0."""
        kept, ends, numbers = bytearray(), array("q"), array("q")
        hashes, digests = bytearray(), bytearray()
        emails = result.emails.split("\n")
        starts = _record_lines(block)
        start = 0
        for i, (first, end, number) in enumerate(
            zip(firsts.tolist(), result.ends, result.rows, strict=True)
        ):
            if first:
                detail = f"same email as row {first}"
                rows.append((base + number, starts[number], emails[i], DUPLICATE, detail))
            else:
                kept += result.items[start:end]
                ends.append(len(kept))
                numbers.append(number)
                hashes += result.keys[8 * i : 8 * i + 8]
                digests += result.digests[8 * i : 8 * i + 8]
            start = end
        return bytes(kept), ends, numbers, bytes(hashes), bytes(digests)


def _record_lines(block: Block) -> dict[int, int]:
    """Record number -> the line it starts on, by parsing the block again (rare path)."""
    reader = records(block)
    starts: dict[int, int] = {}
    line, n = block.first_line, 0
    if block.skip_header:
        next(reader, None)
        line = block.first_line + reader.line_num
    for values in reader:
        start, line = line, block.first_line + reader.line_num
        if values:
            n += 1
            starts[n] = start
    return starts


def _run(
    segment: Segment,
    export: ExportDefinition,
    output: PreparedOutput,
    *,
    max_body_bytes: int,
    progress: ProgressCallback | None,
    workers: int,
    block_bytes: int,
    fast: bool,
    changes: ChangeTracker | None = None,
    describe_changes: DescribeChanges | None = None,
) -> tuple[PrepareSummary, list[ChunkInfo]]:
    source = _SegmentBlocks(segment, block_bytes, part_byte_limit(export.max_profiles))
    blocks = iter(source)
    head = list(itertools.islice(blocks, 2))  # enough to know the columns, and the size
    # Every part empty and no model.json: no row to map, and an empty segment is a valid
    # export, so the mapping is checked against itself.
    columns = source.columns or tuple(dict.fromkeys(export.mapping.values()))
    try:
        mapper = ContactMapper(columns, export.mapping)  # fails here on a missing column
    except InputError:
        if source.first_row is None or is_certainly_header(source.first_row, export.mapping):
            raise  # the columns named come from model.json or from a header row
        raise _headerless(segment, source.first_row, export.mapping) from None
    chunker = JsonChunker(export.list_ids, output.write_chunk, max_bytes=max_body_bytes)
    merge = _Merge(
        export, chunker, RejectsWriter(output.rejects_stream()), source.parts, progress,
        changes=changes,
    )  # fmt: skip
    pool = None
    if workers > 1 and len(head) > 1:
        pool = BlockWorkers(workers, columns, export.mapping, fast=fast)
    try:
        stream = itertools.chain(head, blocks)
        in_use: list[Workers] = [pool] if pool is not None else []
        for block, result in _ordered_results(stream, mapper, in_use, depth=3 * workers, fast=fast):
            merge.add(block, result)
    finally:
        if pool is not None:
            pool.shutdown()
    chunks = chunker.close()
    rows_read, contacts = merge.rows_read, chunker.contacts
    counted: dict[str, Any] | None = None
    if changes is not None:
        merge.seen.clear()  # not needed past the last block; the sort below needs room
        counts = changes.finish()
        contacts = counts.added + counts.updated + counts.unchanged
        output.write_file(SNAPSHOT_FILE, changes.snapshot())
        counted = {**counts.to_json(), "sent": chunker.contacts}
        if describe_changes is not None:
            counted = describe_changes(counted)
    if rows_read != contacts + merge.rejected + merge.duplicates:  # an invariant, not input
        raise CcexportError(
            f"internal error: {rows_read} rows read but {contacts} contacts, "
            f"{merge.rejected} rejected and {merge.duplicates} duplicates"
        )
    read = SegmentRead(
        model=segment.store.describe(segment.model) if segment.model else None,
        entity=segment.entity,
        parts=tuple(PartRows(name, rows) for name, rows in source.parts.items()),
        truncated=dict(sorted(merge.truncated.items())),
        invalid_values=dict(sorted(merge.invalid.items())),
        largest_chunk_bytes=max((c.bytes for c in chunks), default=0),
        max_body_bytes=max_body_bytes,
        workers=workers if in_use else 1,
        worker_kind=pool.kind if pool is not None and in_use else "this thread",
        blocks=merge.blocks,
        columnar_blocks=merge.columnar_blocks,
    )
    names = list_names(export.list_ids)
    summary = PrepareSummary(
        source=segment.describe(),
        list_ids=export.list_ids,
        rows_read=rows_read,
        contacts=contacts,
        duplicates=merge.duplicates,
        rejected=merge.rejected,
        reject_reasons=dict(sorted(merge.reasons.items())),
        chunks=len(chunks),
        fewest_chunks_possible=chunker.fewest_possible(),
        chunk_files=tuple(ChunkFile(chunk_name(c.index), c.contacts, c.bytes) for c in chunks),
        content_hash=source.content.hexdigest(),
        read=read,
        changes=counted,
        # A dry run looks nothing up: its bodies carry the names (shared/exports/account.py).
        list_names=dict.fromkeys(names, "resolved to its id at run time") if names else None,
    )
    return summary, chunks
