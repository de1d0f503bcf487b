"""How long the sandbox's event loop was held up: the fidelity of its rate window.

The sandbox stamps each request's arrival on the rate window from its one event loop.
While the loop is held up (a large import parsed, a garbage collection, the machine's
cores taken by others), requests queue and are stamped together when it comes back,
so requests that were sent a third of a second apart can be counted as five in one
second. Constant Contact's front door is not held up by our work. A benchmark that
sees throttled answers reads these stalls to tell the client's bunching from the
sandbox's own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

TICK = 0.01
"""Seconds between two looks at the loop."""

STALL = 0.05
"""A hold-up at least this long is kept, with when it ended."""

STALLS_KEPT = 100


@dataclass
class LoopLag:
    """The loop's longest hold-up and its recent stalls (wall clock, seconds)."""

    worst: float = 0.0
    stalls: list[tuple[float, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def reset(self) -> None:
        self.worst = 0.0
        self.stalls.clear()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(TICK)
            late = loop.time() - began - TICK
            self.worst = max(self.worst, late)
            if late >= STALL:
                self.stalls = [*self.stalls[-STALLS_KEPT + 1 :], (time.time(), round(late, 3))]
