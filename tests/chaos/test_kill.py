"""``ccexport run`` killed with SIGKILL in the middle of its uploads, then started
again with the same ``--run-id``: a real child process, its engine, its gRPC sidecar
and its event loop gone at once, leaving only what it had written to the run store
(Azurite). The new process finds the staged bodies and the marks of accepted imports
and sends only what had not gone; a chunk accepted in the instant between Constant
Contact's answer and the mark is sent a second time (counted in the figures).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.runs.ids import new_run_id
from tests.chaos.conftest import count_faults
from tests.chaos.figures import FIGURES
from tests.chaos.promises import check_delivery, connect_locally, env_for
from tests.chaos.scale import SCALE
from tests.chaos.segment import MAPPING, upload, write_segment
from tests.support.ctct_support import ccexport_command
from tests.support.sandbox_service import RunningSandbox
from tests.support.services import ROOT

pytestmark = pytest.mark.azurite

KILL_AFTER = (3, 6) if SCALE.name == "small" else (3, 9)
"""Kill the run once this many chunks were accepted (one kill per number): the first
process, then the one started again after it, each in the middle of its uploads."""
RUN_TIMEOUT = 180.0


def start(args: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as stdout:
        return subprocess.Popen(
            ccexport_command(*args), cwd=ROOT, env=env, stdout=stdout,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip


def kill_when(
    process: subprocess.Popen[bytes], sandbox: RunningSandbox, list_id: str, accepted: int
) -> bool:
    """SIGKILL the process (by PID) once ``accepted`` chunks were accepted; False if it
    ended first."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if len(sandbox.imports(list_id)) >= accepted:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            return True
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    raise AssertionError(f"no {accepted} imports within {RUN_TIMEOUT:g} s")


def test_a_killed_run_started_again_loses_nothing(
    chaos_sandbox: RunningSandbox, azurite: str, tmp_path: Path
) -> None:
    segment = write_segment(tmp_path / "segment", SCALE.kill_rows, seed=5, tag="kill")
    list_id = chaos_sandbox.create_list()
    home = tmp_path / "home"
    connect_locally(chaos_sandbox, home)
    source = upload(segment, azurite, "inbox", f"kill-{uuid.uuid4().hex[:8]}")
    env = env_for(chaos_sandbox, home, azurite)
    env["CTCT_REQUESTS_PER_SECOND"] = "4"  # production pacing: uploads take seconds
    run_id = new_run_id("kill", datetime.now(UTC))
    maps = [arg for column in MAPPING.items() for arg in ("--map", "=".join(column))]
    args = ["run", source, "--list-id", list_id, *maps, "--run-id", run_id, "--json",
            "--poll-seconds", "0.2", "--max-body-bytes", str(SCALE.body_bytes)]  # fmt: skip
    chaos_sandbox.faults(latency={"rate": 1, "seconds": 0.1})
    before = chaos_sandbox.stats()
    try:
        for n, accepted in enumerate(KILL_AFTER):
            process = start(args, env, tmp_path / f"killed-{n}.json")
            try:
                killed = kill_when(process, chaos_sandbox, list_id, accepted)
            finally:
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
                assert process.stderr is not None
                process.stderr.close()
            assert killed, f"the run ended before {accepted} chunks were accepted"
            FIGURES.fault("process_killed")
            FIGURES.run()
        again = start(args, env, tmp_path / "again.json")
        try:
            _, stderr = again.communicate(timeout=RUN_TIMEOUT)
        finally:
            if again.poll() is None:
                os.kill(again.pid, signal.SIGKILL)
                again.wait(timeout=10)
        FIGURES.run()
    finally:
        count_faults(chaos_sandbox, before)
    assert again.returncode == 0, stderr.decode(errors="replace")[-2000:]
    assert b"Traceback" not in stderr
    report = json.loads((tmp_path / "again.json").read_bytes())
    assert report["run_id"] == run_id
    outcomes = report["chunk_outcomes"]
    assert len(outcomes) > KILL_AFTER[-1] + 1, "too few chunks to kill the run in the middle"
    # What the killed processes had sent was found (all but a chunk in flight, at most,
    # per kill), and the last process sent the rest itself.
    accepted_before = sum(o["already_accepted"] for o in outcomes)
    assert accepted_before >= KILL_AFTER[-1] - len(KILL_AFTER), accepted_before
    assert accepted_before < len(outcomes), "the last process had nothing left to send"
    check_delivery(chaos_sandbox, list_id, segment, [report])
