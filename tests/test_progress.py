"""The progress bar of `ccexport run`: it fits the terminal and says how long is left."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from shared.workstation.progress import ProgressBar, terminal_columns

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def status(phase: str, done: int, total: int = 1_000_000, **more: int) -> dict[str, Any]:
    return {"phase": phase, "contacts_total": total, "contacts_done": done,
            "chunks_uploaded": more.get("uploaded", 25), "chunks_total": 25,
            "chunks_failed": more.get("failed", 0)}  # fmt: skip


def a_run(columns: int) -> list[str]:
    """A whole run drawn at ``columns``: the lines as the terminal shows them."""
    clock, screen = Clock(), io.StringIO()
    bar = ProgressBar(screen, enabled=True, clock=clock, columns=lambda: columns)
    for rows in (0, 120_000, 999_999):
        clock.now += 7.0
        bar.rows("r", rows)
    clock.now += 1.0
    bar.status(status("uploading", 0, uploaded=3))
    for done in (0, 40_000, 400_000, 960_000):
        clock.now += 3_600.0  # an hour a step: the longest times there are
        bar.status(status("uploading" if done < 400_000 else "waiting", done, failed=2))
    clock.now += 1.0
    bar.status(status("finishing", 1_000_000))
    bar.close()
    text = screen.getvalue()
    assert text.endswith("\n")
    return [line for segment in text.split("\n") for line in segment.split("\r") if line]


@pytest.mark.parametrize("columns", [80, 40])
def test_every_line_fits_the_terminal_and_keeps_the_time_left(columns: int) -> None:
    lines = a_run(columns)
    assert len(lines) >= 8
    for line in lines:
        assert len(line) <= columns - 1, f"{line!r} would wrap at {columns} columns"
    sending = [line.rstrip() for line in lines if not line.startswith("preparing")]
    assert all("ETA " in line and "%|" in line for line in sending), sending
    assert any("ETA ?" in line for line in sending)  # nothing imported yet
    # 400,000 imported in the 3 hours since sending began: 600,000 take 4.5 hours more
    assert any("ETA 4:30:00" in line for line in sending)
    assert "999,999 rows" in lines[2]


def test_wide_terminals_get_the_counts_and_the_chunks() -> None:
    lines = [line.rstrip() for line in a_run(120)]
    assert "preparing: 999,999 rows read [00:21, " in lines[2]
    waiting = next(line for line in lines if line.startswith("waiting"))
    assert "| 400,000/1,000,000 contacts [3:00:22, ETA 4:30:00, 25/25 sent, 2 failed]" in waiting


def test_the_time_left_is_from_the_contacts_imported_since_sending_began() -> None:
    clock = Clock()
    bar = ProgressBar(io.StringIO(), enabled=True, clock=clock, columns=lambda: 100)
    clock.now = 50.0  # preparing took 50 s: not part of the import rate
    bar.status(status("uploading", 0, total=200_000))
    assert "ETA ?" in bar.line()
    clock.now = 70.0
    bar.status(status("waiting", 50_000, total=200_000))
    assert "25%|" in bar.line()
    assert "ETA 01:00" in bar.line()  # 50,000 in 20 s: 150,000 in 60 s
    assert "[01:10, " in bar.line()  # elapsed counts from the start


def test_nothing_to_send_is_said_plainly() -> None:
    bar = ProgressBar(io.StringIO(), enabled=True, clock=Clock(), columns=lambda: 80)
    bar.status(status("finishing", 0, total=0))
    assert bar.line() == "finishing: nothing to send [00:00]"


def test_a_utf8_terminal_gets_a_smooth_bar() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    bar = ProgressBar(stream, enabled=True, clock=Clock(), columns=lambda: 60)
    bar.status(status("waiting", 500_000))
    assert "█" in bar.line()
    assert len(bar.line()) <= 59


def test_the_width_comes_from_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    leader, follower = os.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
        with open(follower, "w", closefd=False) as tty:
            assert terminal_columns(tty) == 40
            bar = ProgressBar(tty, enabled=True, clock=Clock())
            bar.status(status("waiting", 500_000))
            assert len(bar.line()) <= 39
        assert terminal_columns(io.StringIO()) == 80  # not a terminal
        monkeypatch.setenv("COLUMNS", "132")
        assert terminal_columns(io.StringIO()) == 132
    finally:
        os.close(leader)
        os.close(follower)


def test_no_terminal_no_bar_and_no_tqdm() -> None:
    program = (
        "import io, sys\n"
        "from shared.workstation.progress import ProgressBar\n"
        "out = io.StringIO()\n"
        "bar = ProgressBar(out, enabled=False)\n"
        "bar.rows('r', 10)\n"
        "bar.status({'phase': 'waiting', 'contacts_total': 2, 'contacts_done': 1})\n"
        "bar.close()\n"
        "print(repr(out.getvalue()), 'tqdm' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)  # fmt: skip
    assert result.stdout == "'' False\n"


def test_a_wait_for_the_daily_quota_says_when_it_starts_and_costs_no_rate() -> None:
    clock = Clock()
    bar = ProgressBar(io.StringIO(), enabled=True, clock=clock, columns=lambda: 100)
    clock.now = 10.0
    bar.status(
        {**status("waiting_for_quota", 0, total=200_000), "resumes_at": "2026-12-06T00:00:00Z"}
    )
    assert bar.line() == (
        "waiting for the API key's daily quota; starts by itself at 2026-12-06T00:00:00Z"
    )
    clock.now = 3_610.0  # an hour of waiting is not part of the import rate
    bar.status(status("uploading", 0, total=200_000))
    clock.now = 3_630.0
    bar.status(status("waiting", 50_000, total=200_000))
    assert "ETA 01:00" in bar.line()  # 50,000 in the 20 s since sending began
