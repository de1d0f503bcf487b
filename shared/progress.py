"""A one-line progress bar on a terminal, drawn from an export run's custom status.

A few lines instead of a dependency: it redraws one line with a carriage return, at
most ten times a second, and only when the stream is a terminal (a log file or a pipe
gets nothing). Safe to feed from two threads: the run's status comes from the
waiting thread, the rows read from the thread that prepares the segment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

WIDTH = 28


class ProgressBar:
    def __init__(
        self, stream: TextIO, *, enabled: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self.enabled = enabled
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"phase": "preparing"}
        self._rows = 0
        self._drawn_at = -1.0
        self._width = 0

    def rows(self, _run_id: str, rows: int) -> None:
        with self._lock:
            self._rows = rows
            self._draw(force=False)

    def status(self, status: dict[str, Any]) -> None:
        with self._lock:
            phase_changed = status.get("phase") != self._status.get("phase")
            self._status = status
            self._draw(force=phase_changed)

    def line(self) -> str:
        """What the bar shows now."""
        status, elapsed = self._status, self._clock() - self._started
        phase = str(status.get("phase", "preparing"))
        if phase == "preparing":
            return f"preparing   {self._rows:>12,} rows read  {elapsed:6.1f}s"
        total = int(status.get("contacts_total") or 0)
        done = int(status.get("contacts_done") or 0)
        filled = WIDTH * done // total if total else WIDTH
        bar = "#" * filled + "." * (WIDTH - filled)
        chunks = f"{status.get('chunks_uploaded', 0)}/{status.get('chunks_total', 0)} sent"
        failed = int(status.get("chunks_failed") or 0)
        extra = f", {failed} failed" if failed else ""
        return (
            f"{phase:<11} [{bar}] {done:,}/{total:,} contacts imported "
            f"({chunks}{extra})  {elapsed:6.1f}s"
        )

    def _draw(self, *, force: bool) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not force and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        text = self.line()
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write(f"\r{text}{padding}")
        self._stream.flush()

    def close(self) -> None:
        """Draw the last state and end the line."""
        with self._lock:
            if self.enabled and self._drawn_at >= 0:
                self._draw(force=True)
                self._stream.write("\n")
                self._stream.flush()
