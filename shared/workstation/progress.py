"""A one-line progress bar on a terminal, drawn from an export run's custom status.

It redraws one line with a carriage return, at most ten times a second, and only when
the stream is a terminal (a log file or a pipe gets nothing). At every draw the line
fits the terminal's width, one column short so that it never wraps, and drops detail
before it drops the bar and the estimate of the time left: rows read while the
segment is prepared; then the share of contacts imported, the time so far and the
time left (contacts imported per second since sending began, against those still to
go; "ETA ?" until the first import completes).

tqdm lays the line out (bar, times, width trimming); it is imported only when a line
is drawn, so a run whose output is not a terminal never loads it. Safe to feed from
two threads: the run's status comes from the waiting thread, the rows read from the
thread that prepares the segment.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from shared.runs.contract import Phase

MIN_BAR = 10  # columns the bar keeps at least before detail is dropped
PHASE_WIDTH = 9  # "preparing", "uploading", "finishing": the bar does not jump
DEFAULT_COLUMNS = 80

# Richest first; the first that leaves MIN_BAR columns for {bar} is drawn.
# {count} and {total_count} are the counts with thousands separators.
SENDING_FORMATS = (
    "{desc} {percentage:3.0f}%|{bar}| {count}/{total_count} contacts "
    "[{elapsed}, ETA {remaining}{postfix}]",
    "{desc} {percentage:3.0f}%|{bar}| {count}/{total_count} [{elapsed}, ETA {remaining}]",
    "{desc} {percentage:3.0f}%|{bar}| {count}/{total_count} [ETA {remaining}]",
    "{desc} {percentage:3.0f}%|{bar}| ETA {remaining}",
    "{percentage:3.0f}%|{bar}| ETA {remaining}",
)
PREPARING_FORMATS = (
    "{desc}: {count} rows read [{elapsed}, {rate_fmt}]",
    "{desc}: {count} rows read [{elapsed}]",
    "{count} rows [{elapsed}]",
)
NOTHING_TO_SEND = "{desc}: nothing to send [{elapsed}]"


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal behind ``stream`` (COLUMNS first, as shutil has it)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(stream.fileno()).columns or DEFAULT_COLUMNS
    except (AttributeError, OSError, ValueError):
        return DEFAULT_COLUMNS


def _meter(
    formats: tuple[str, ...],
    width: int,
    *,
    n: float,
    total: float,
    elapsed: float,
    rate: float | None,
    desc: str,
    postfix: str = "",
    ascii: bool | str = False,
) -> str:
    """The richest of ``formats`` that fits ``width`` columns, laid out by tqdm."""
    from tqdm.std import tqdm  # noqa: PLC0415 - only a terminal that shows a bar loads it

    # Fields of our own: format_meter passes extra keywords on to bar_format.
    extra: dict[str, Any] = {"count": f"{n:,.0f}", "total_count": f"{total:,.0f}"}

    def meter(bar_format: str, ncols: int | None) -> str:
        return tqdm.format_meter(
            n, total, elapsed, ncols=ncols, prefix=desc, ascii=ascii, unit=" rows",
            unit_scale=True, rate=rate, bar_format=bar_format, postfix=postfix or None,
            **extra,
        )  # fmt: skip

    for bar_format in formats:
        # Measured at the widest its fields get, so that the choice holds for the run.
        widest = bar_format.replace("{bar}", "").replace("{count}", "{total_count}")
        for field in ("{elapsed}", "{remaining}"):
            widest = widest.replace(field, "00:00:00")
        fixed = len(meter(widest, None))
        needed = fixed + (MIN_BAR if "{bar}" in bar_format else 0)
        if needed <= width:
            return meter(bar_format, width)
    return meter(formats[-1], width)  # trimmed to the width by tqdm


class ProgressBar:
    def __init__(
        self,
        stream: TextIO,
        *,
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
        columns: Callable[[], int] | None = None,
    ) -> None:
        self._stream = stream
        self.enabled = enabled
        self._clock = clock
        self._columns = columns or (lambda: terminal_columns(stream))
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self._ascii: bool | str = False if encoding.startswith("utf") else ".#"
        self._started = clock()
        self._sending_since: float | None = None
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"phase": "preparing"}
        self._rows = 0
        self._drawn_at = -1.0

    def rows(self, _run_id: str, rows: int) -> None:
        with self._lock:
            self._rows = rows
            self._draw(force=False)

    def status(self, status: dict[str, Any]) -> None:
        with self._lock:
            phase_changed = status.get("phase") != self._status.get("phase")
            if self._sending_since is None and status.get("phase", "preparing") not in (
                "preparing",
                Phase.WAITING_FOR_QUOTA,
            ):
                self._sending_since = self._clock()
            self._status = status
            self._draw(force=phase_changed)

    def line(self, columns: int | None = None) -> str:
        """What the bar shows now, in at most ``columns - 1`` characters."""
        width = max((columns or self._columns()) - 1, 1)
        status, now = self._status, self._clock()
        elapsed = now - self._started
        phase = str(status.get("phase", "preparing"))
        desc = phase.ljust(PHASE_WIDTH)
        if phase == Phase.WAITING_FOR_QUOTA:  # nothing is sent before the key's day turns
            resumes = status.get("resumes_at") or "00:00 UTC"
            return f"waiting for the API key's daily quota; starts by itself at {resumes}"[:width]
        if phase == "preparing":
            return _meter(
                PREPARING_FORMATS, width, n=self._rows, total=0, elapsed=elapsed, rate=None,
                desc=desc,
            )  # fmt: skip
        total = int(status.get("contacts_total") or 0)
        if total <= 0:
            return _meter((NOTHING_TO_SEND,), width, n=0, total=0, elapsed=elapsed, rate=None,
                          desc=phase)  # fmt: skip
        done = min(int(status.get("contacts_done") or 0), total)
        sending = now - (self._sending_since if self._sending_since is not None else now)
        rate = done / sending if done and sending > 0 else 0.0  # 0: the time left is unknown
        chunks = f"{status.get('chunks_uploaded', 0)}/{status.get('chunks_total', 0)} sent"
        failed = int(status.get("chunks_failed") or 0)
        postfix = f"{chunks}, {failed} failed" if failed else chunks
        return _meter(
            SENDING_FORMATS, width, n=done, total=total, elapsed=elapsed, rate=rate, desc=desc,
            postfix=postfix, ascii=self._ascii,
        )  # fmt: skip

    def _draw(self, *, force: bool) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not force and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        columns = self._columns()
        text = self.line(columns)
        # Padded to the width: what a longer line left behind is wiped, nothing wraps.
        self._stream.write(f"\r{text.ljust(max(columns - 1, 1))}")
        self._stream.flush()

    def close(self) -> None:
        """Draw the last state and end the line."""
        with self._lock:
            if self.enabled and self._drawn_at >= 0:
                self._draw(force=True)
                self._stream.write("\n")
                self._stream.flush()
