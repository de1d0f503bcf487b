"""Where prepare maps its blocks: threads for clean blocks, processes for the rest.

The columnar path (shared/prepare/columnar.py) spends most of a block inside Arrow, which
lets go of the GIL, so threads map clean blocks side by side and share one copy of
Arrow, where each process would load its own. The row path is Python through and
through: only processes run it side by side.

A file is rarely all one or the other: one value with a line break in it sends its
whole block to the row path, and a line break in one row of 500 sends nine blocks in
ten. So each block is sent where it will be mapped fastest, by the same cheap test of
its bytes the columnar path starts with; the processes start with the first block
that needs them, and never for a clean file.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

from shared.constant_contact.contacts import ContactMapper
from shared.prepare.results import BlockResult
from shared.prepare.rows import init_worker, map_block_in_worker
from shared.segments.blocks import Block


class BlockWorkers:
    """``count`` threads for the blocks the columnar path takes (when ``fast`` and the
    mapping suits it), and ``count`` processes, started when first needed, for the rest.
    """

    def __init__(
        self, count: int, columns: Sequence[str], mapping: Mapping[str, str], *, fast: bool
    ) -> None:
        self._count = count
        self._initargs = (tuple(columns), dict(mapping))
        self._threads: ThreadPoolExecutor | None = None
        self._clean_lines: Callable[[Block], int | None] = lambda _block: None
        self._processes: ProcessPoolExecutor | None = None
        self._to_threads = self._to_processes = 0
        if fast:
            from shared.prepare import columnar as arrow_blocks  # noqa: PLC0415 - Arrow only where it is used

            if arrow_blocks.suits(ContactMapper(columns, mapping)):
                self._clean_lines = arrow_blocks.clean_lines
                self._threads = ThreadPoolExecutor(
                    count, "prepare-map", initializer=init_worker, initargs=(*self._initargs, True)
                )

    def submit(self, block: Block) -> Future[BlockResult]:
        lines = self._clean_lines(block) if self._threads is not None else None
        if self._threads is not None and lines is not None:
            self._to_threads += 1
            return self._threads.submit(map_block_in_worker, block, lines)  # not tested twice
        self._to_processes += 1
        return self._process_pool().submit(map_block_in_worker, block)

    @property
    def kind(self) -> str:
        """What mapped the blocks: "threads", "processes" or "threads and processes"."""
        used = [("threads", self._to_threads), ("processes", self._to_processes)]
        return " and ".join(name for name, blocks in used if blocks) or "none"

    def shutdown(self) -> None:
        for pool in (self._threads, self._processes):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _process_pool(self) -> ProcessPoolExecutor:
        if self._processes is None:
            # forkserver: never fork a process that has threads (the Functions worker,
            # the local engine's gRPC, the threads above); a clean server process forks
            # the workers. It preloads only the row path's module: no Arrow, no Azure SDK.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["shared.prepare.rows"])
            self._processes = ProcessPoolExecutor(
                self._count,
                mp_context=context,
                initializer=init_worker,
                initargs=(*self._initargs, False),
            )
        return self._processes
