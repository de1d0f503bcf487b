"""``ccexport serve`` as a child process for tests: started, read, stopped by its PID."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ctct_support import ccexport_command
from tests.support.services import ROOT, ServiceError

START_TIMEOUT = 60.0


@dataclass
class RunningServe:
    proc: subprocess.Popen[str]
    api: str
    """``http://127.0.0.1:PORT/api``, from serve's first line."""
    log: Path
    lines: list[str] = field(default_factory=list)
    """Everything serve printed on stdout, the first line included."""

    @property
    def origin(self) -> str:
        return self.api.rsplit("/", 1)[0]

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])

    def stop(self, sig: int | None = None, timeout: float = 60.0) -> int:
        """Send SIGTERM (or ``sig``) and wait; returns the exit status."""
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise ServiceError(f"serve did not stop within {timeout:.0f}s") from None
        return self.proc.returncode

    def line(self, starts: str, timeout: float = 10.0) -> str:
        """The first stdout line that starts with ``starts``, waiting for it to come."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((line for line in self.lines if line.startswith(starts)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"serve printed no line starting {starts!r}: {self.lines}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _read_lines(proc: subprocess.Popen[str], into: list[str], first: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append(line.rstrip("\n"))
        first.set()
    first.set()


@contextmanager
def running_serve(
    env: dict[str, str], *args: str, log: Path, cwd: Path = ROOT
) -> Iterator[RunningServe]:
    """``ccexport serve --port 0 ARGS`` for the block; stopped by its PID afterwards."""
    command: Sequence[str] = ccexport_command("serve", "--port", "0", *args)
    with log.open("w") as err:
        proc = subprocess.Popen(  # a fixed command of this repository
            list(command), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
    lines: list[str] = []
    first = threading.Event()
    reader = threading.Thread(target=_read_lines, args=(proc, lines, first), daemon=True)
    reader.start()
    running = RunningServe(proc, "", log, lines)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not lines and proc.poll() is None and time.monotonic() < deadline:
            first.wait(0.1)
        if not lines or not lines[0].startswith("serving http://127.0.0.1:"):
            running.stop()
            raise ServiceError(
                f"serve did not start: stdout {lines[:3]}, log: {running.log_text()[-2000:]}"
            )
        running.api = lines[0].split(" ", 1)[1]
        yield running
    finally:
        running.stop()
        reader.join(timeout=5)
