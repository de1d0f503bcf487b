"""The sandbox command: one ready line, loopback only, clean exit on SIGTERM, bad flags refused."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil  # type: ignore[import-untyped]  # no stubs pinned
import pytest

from sandbox.cli import main
from tests.support.services import ROOT, free_port


def test_ready_line_loopback_only_and_clean_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", f"--port={port}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith(f"sandbox listening on http://127.0.0.1:{port}")
        assert "in memory" in line
        listening = [
            c.laddr
            for c in psutil.Process(proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert [(addr.ip, addr.port) for addr in listening] == [("127.0.0.1", port)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == b""  # nothing logged: no tokens, no emails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_bad_fault_flags_are_refused_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port=0", "--fault-503-rate=1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
