"""The prepare router (shared/prepare/workers.py): each block goes where it is mapped
right and fastest, plainly clean blocks to the threads of the columnar path and the
rest to worker processes on the row path, which start only when a block needs them.
Whichever way a block goes, its contacts are the ones written out below by hand. A
block routed wrong is mapped by a path that reads it apart: contacts lost or mangled."""

from __future__ import annotations

import threading

import orjson

from shared.prepare.results import BlockResult
from shared.prepare.workers import BlockWorkers
from shared.segments.blocks import Block

COLUMNS = ["Email", "First", "Last"]
MAPPING = {"email": "Email", "first_name": "First"}
DATES = {"email": "Email", "birthday": "Last"}  # a date column: no columnar path

CLEAN = b"ana@example.com,Ana,Smith\nbo@example.com,Bo,Lee\n"
BROKEN = b'cy@example.com,"Cy\nline two",Ng\ndee@example.com,Dee,2001-02-03\n'


def block(data: bytes, encoding: str = "utf-8") -> Block:
    return Block("part-1.csv", data, encoding, first_line=2, last=True)


def contacts(result: BlockResult) -> list[dict[str, object]]:
    assert result.error is None
    loaded: list[dict[str, object]] = orjson.loads(b"[" + result.items[:-1] + b"]")
    return loaded


def test_a_clean_block_is_mapped_in_a_thread_and_no_process_starts() -> None:
    workers = BlockWorkers(2, COLUMNS, MAPPING, fast=True)
    try:
        assert workers.kind == "none"
        result = workers.submit(block(CLEAN)).result()
        assert result.columnar  # the columnar path mapped it
        assert contacts(result) == [
            {"email": "ana@example.com", "first_name": "Ana"},
            {"email": "bo@example.com", "first_name": "Bo"},
        ]
        assert workers.kind == "threads"
        assert workers._processes is None
    finally:
        workers.shutdown()


def test_blocks_that_are_not_plainly_clean_go_to_processes_on_the_row_path() -> None:
    workers = BlockWorkers(1, COLUMNS, MAPPING, fast=True)
    try:
        broken = workers.submit(block(BROKEN)).result()
        assert not broken.columnar
        assert contacts(broken) == [
            {"email": "cy@example.com", "first_name": "Cy\nline two"},
            {"email": "dee@example.com", "first_name": "Dee"},
        ]
        assert workers.kind == "processes"
        latin = workers.submit(block(CLEAN, encoding="latin-1")).result()  # not UTF-8
        assert not latin.columnar
        assert len(contacts(latin)) == 2
        clean = workers.submit(block(CLEAN)).result()
        assert clean.columnar
        assert workers.kind == "threads and processes"
    finally:
        workers.shutdown()
        workers.shutdown()  # twice is harmless


def test_without_the_fast_path_or_for_a_mapping_it_cannot_take_all_goes_to_processes() -> None:
    for workers in (
        BlockWorkers(1, COLUMNS, MAPPING, fast=False),
        BlockWorkers(1, COLUMNS, DATES, fast=True),
    ):
        try:
            assert workers._threads is None
            result = workers.submit(block(CLEAN)).result()
            assert not result.columnar
            assert workers.kind == "processes"
        finally:
            workers.shutdown()
    dated = BlockWorkers(1, COLUMNS, DATES, fast=False)
    try:
        result = dated.submit(block(BROKEN)).result()
        assert contacts(result) == [
            {"email": "cy@example.com"},
            {"email": "dee@example.com", "birthday_month": 2, "birthday_day": 3},
        ]
        assert result.invalid == {"birthday": 1}  # "Ng" is no date
    finally:
        dated.shutdown()


def test_the_pools_are_the_size_asked_for_and_processes_are_forkserved() -> None:
    """Two of each on two cores (the memory figures in docs/DEVELOPING.md assume it);
    worker processes are forked by a clean server, never from this process, which
    has threads (forking a process with threads can deadlock the child)."""
    workers = BlockWorkers(3, COLUMNS, MAPPING, fast=True)
    try:
        workers.submit(block(CLEAN)).result()
        assert workers._threads is not None
        assert workers._threads._max_workers == 3
        names = [t.name for t in threading.enumerate()]
        assert any(n.startswith("prepare-map") for n in names), names
        workers.submit(block(BROKEN)).result()
        pool = workers._processes
        assert pool is not None
        assert vars(pool)["_max_workers"] == 3
        context = pool._mp_context
        assert context is not None
        assert context.get_start_method() == "forkserver"
    finally:
        workers.shutdown()
