"""One pacer per API key shared by every process through a blob (issue 18): processes
started together stay under the key's limit as the sandbox counts it, a process killed
with slots reserved holds the others back a bounded time, and the day's count is still
there for the next process. Against Azurite and the sandbox, with real processes
(tests/support/pace_worker.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from azure.storage.blob import ContainerClient

from functions import http_api
from shared.config import Config
from shared.constant_contact.pacing import (
    LATE_AFTER,
    PACING_MARGIN,
    RESERVE_AHEAD,
    Pacer,
    PaceState,
    key_label,
)
from shared.storage.records import BlobRecord, FileRecord
from shared.wiring import clients
from tests.support.function_harness import AppEnv, response_json
from tests.support.http_calls import call
from tests.support.sandbox_service import RunningSandbox
from tests.support.services import (
    ROOT,
    azurite_command,
    azurite_connection_string,
    free_port,
    running,
)

RATE = 4.0 * PACING_MARGIN  # what runs pace at under the key's 4 a second


def container_of(connection_string: str) -> ContainerClient:
    """A container of the test's own (made by the first write)."""
    return ContainerClient.from_connection_string(
        connection_string, f"pace-{uuid.uuid4().hex[:12]}"
    )


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    sent: list[float] = field(default_factory=list)
    ready: float | None = None
    figures: dict[str, Any] | None = None
    output: list[str] = field(default_factory=list)  # anything else it printed
    reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("sent "):
                self.sent.append(float(line.split()[1]))
            elif line.startswith("ready"):
                self.ready = time.time()
            elif line.startswith("{"):
                self.figures = json.loads(line)
            else:
                self.output.append(line)

    def wait_for_sends(self, count: int, timeout: float = 60) -> None:
        """Until the worker has sent ``count`` requests; fails if it dies or takes longer."""
        deadline = time.monotonic() + timeout
        while len(self.sent) < count:
            if self.proc.poll() is not None:
                if self.reader is not None:
                    self.reader.join(timeout=10)
                pytest.fail(f"the worker exited: {''.join(self.output)[-2000:]}")
            assert time.monotonic() < deadline, f"{len(self.sent)} of {count} sent"
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> dict[str, Any]:
        code = self.proc.wait(timeout=timeout)
        assert self.reader is not None
        self.reader.join(timeout=10)
        assert code == 0, "".join(self.output)[-2000:]
        assert self.figures is not None
        return self.figures


@contextmanager
def workers(count: int, settings: Callable[[int], dict[str, Any]]) -> Iterator[list[Worker]]:
    """``count`` pace_worker processes, started together; killed by PID if still running."""
    started: list[Worker] = []
    try:
        for n in range(count):
            proc = subprocess.Popen(  # a fixed module of this repository
                [sys.executable, "-m", "tests.support.pace_worker", json.dumps(settings(n))],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            worker = Worker(proc)
            worker.reader = threading.Thread(target=worker.read, daemon=True)
            worker.reader.start()
            started.append(worker)
        yield started
    finally:
        for worker in started:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(timeout=10)


def most_in_one_second(starts: list[float]) -> int:
    """The most request starts that fall in any one-second window."""
    starts = sorted(starts)
    most, first = 0, 0
    for last, moment in enumerate(starts):
        while moment - starts[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.fixture
def limited(sandbox_factory: Callable[..., RunningSandbox]) -> RunningSandbox:
    """A sandbox with Constant Contact's limits: 4 requests a second, 1 token a second."""
    return sandbox_factory(activity_delay=0)


def worker_settings(
    azurite: str, container: ContainerClient, sandbox: RunningSandbox, **overrides: Any
) -> dict[str, Any]:
    return {
        "connection_string": azurite,
        "container": container.container_name,
        "blob": "pacing/key.json",
        "api_base": sandbox.api_base,
        "token": sandbox.access_token(),
        "list_id": sandbox.create_list(),
        "requests": 10,
        "rate": RATE,
        "ahead": RESERVE_AHEAD,
        "late_after": LATE_AFTER,
        "concurrency": 4,
        **overrides,
    }


# --- the record -----------------------------------------------------------------------


def test_blob_record_changes_are_atomic_across_clients(azurite: str) -> None:
    """Eight clients (as eight instances) add one 25 times each at once: nothing is lost."""
    name = container_of(azurite).container_name

    def add_ones() -> None:
        own = ContainerClient.from_connection_string(azurite, name)
        record = BlobRecord(own, "counter")
        for _ in range(25):
            record.update(lambda old: str(int(old or b"0") + 1).encode())

    threads = [threading.Thread(target=add_ones) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert BlobRecord(ContainerClient.from_connection_string(azurite, name), "counter").read() == (
        b"200"
    )


def test_a_change_that_refuses_writes_nothing(azurite: str, tmp_path: Path) -> None:
    for record in (BlobRecord(container_of(azurite), "r"), FileRecord(tmp_path / "r")):
        record.update(lambda _old: b"kept")

        def refuse(_old: bytes | None) -> bytes:
            raise LookupError

        with pytest.raises(LookupError):
            record.update(refuse)
        assert record.read() == b"kept"


# --- processes sharing the key --------------------------------------------------------


def test_processes_started_together_stay_under_the_limit(
    azurite: str, limited: RunningSandbox
) -> None:
    """Four processes with four senders each, 40 requests: not one is throttled, the
    sandbox counts all 40 for the key, and together they use the rate they are given."""
    container = container_of(azurite)
    common = worker_settings(azurite, container, limited)
    with workers(4, lambda _n: common) as running:
        figures = [worker.finish() for worker in running]
    starts = sorted(moment for worker in running for moment in worker.sent)
    stats = limited.stats()
    assert stats["throttled"] == 0
    assert [f["throttled"] for f in figures] == [0, 0, 0, 0]
    assert stats["daily_used"][limited.client_id] == 40 == len(starts)
    assert most_in_one_second(starts) <= 4
    # Full: 40 starts in about 39 intervals at the rate, not much more.
    span = starts[-1] - starts[0]
    assert 39 / RATE - 0.3 <= span <= 39 / RATE * 1.5  # a busy machine wakes some late
    # Fair: every process sent in the first half of the run.
    half = starts[0] + span / 2
    assert all(any(moment < half for moment in worker.sent) for worker in running)
    pacer = Pacer(RATE, record=BlobRecord(container, "pacing/key.json"))
    assert pacer.usage().used == 40


def test_a_process_with_one_request_is_not_outvoted_by_busy_ones(
    azurite: str, limited: RunningSandbox
) -> None:
    """Two processes with 24 requests waiting each keep the key busy; a third, started
    meanwhile with one request, sends it within a few of the key's intervals after the
    slots the others hold (RESERVE_AHEAD). Were every waiting request to ask for the
    next slot, it would be one voice against 48 and wait about 48 intervals more (13 s);
    each process asks with one voice instead."""
    container = container_of(azurite)
    busy = worker_settings(azurite, container, limited, requests=1000, concurrency=24)
    polite = {**busy, "requests": 1, "concurrency": 1}
    waits = []
    with workers(2, lambda _n: busy) as running:
        for worker in running:
            worker.wait_for_sends(3)
        for _ in range(2):
            with workers(1, lambda _n: polite) as (late,):
                late.finish()
            assert late.ready is not None
            waits.append(late.sent[0] - late.ready)
    assert max(waits) < RESERVE_AHEAD + 5 / RATE, waits
    assert limited.stats()["throttled"] == 0


def test_a_killed_process_holds_the_others_back_a_bounded_time(
    azurite: str, limited: RunningSandbox
) -> None:
    """A process with 30 senders waiting is killed: it held at most RESERVE_AHEAD of the
    key's time, and the next process sends as soon as that is over."""
    container = container_of(azurite)
    greedy = worker_settings(azurite, container, limited, requests=1000, concurrency=30)
    with workers(1, lambda _n: greedy) as (first,):
        first.wait_for_sends(4)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        killed = time.time()
    state = PaceState.parse(BlobRecord(container, "pacing/key.json").read())
    assert state.next - killed <= RESERVE_AHEAD + 1 / RATE + 0.1
    polite = {**greedy, "requests": 2, "concurrency": 1}
    with workers(1, lambda _n: polite) as (second,):
        second.finish()
    assert second.ready is not None
    assert second.sent[0] - max(second.ready, state.next - 1 / RATE) < 0.5
    assert limited.stats()["throttled"] == 0


def test_without_a_bound_a_killed_process_would_hold_its_whole_queue(
    azurite: str, limited: RunningSandbox
) -> None:
    """The same kill with slots reserved without bound: the others would wait for all
    30 of its senders, which is what RESERVE_AHEAD prevents."""
    container = container_of(azurite)
    greedy = worker_settings(azurite, container, limited, requests=1000, concurrency=30)
    greedy["ahead"] = None
    with workers(1, lambda _n: greedy) as (first,):
        first.wait_for_sends(2)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        killed = time.time()
    state = PaceState.parse(BlobRecord(container, "pacing/key.json").read())
    assert state.next - killed > 20 / RATE


async def test_the_days_count_survives_the_processes(azurite: str, limited: RunningSandbox) -> None:
    """A process counts its requests in the record; a new one, later, reads them and adds
    its own; a quota stop one of them records holds for the other."""
    container = container_of(azurite)
    settings = worker_settings(azurite, container, limited, requests=5, concurrency=1)
    with workers(1, lambda _n: settings) as (first,):
        first.finish()
    later = Pacer(RATE, record=BlobRecord(container, "pacing/key.json"))
    assert later.usage().used == 5
    await later.wait()
    assert later.usage().used == 6
    later.stop_for_the_day()
    again = Pacer(RATE, record=BlobRecord(container, "pacing/key.json"))
    assert again.usage().stopped_until is not None
    with pytest.raises(Exception, match="daily quota exhausted"):
        await again.wait()


# --- wiring ---------------------------------------------------------------------------


def test_with_storage_the_key_is_paced_through_a_blob(azurite: str, tmp_path: Path) -> None:
    env = {"CTCT_CLIENT_ID": f"key-{uuid.uuid4().hex[:6]}", "CCEXPORT_HOME": str(tmp_path)}
    shared = Config.from_mapping({**env, "CCEXPORT_STORAGE": azurite})
    alone = Config.from_mapping(env)
    for config, kind in ((shared, BlobRecord), (alone, FileRecord)):
        for pacer in (clients.run_pacer(config), clients.token_pacer(config)):
            assert isinstance(pacer.record, kind)
            assert pacer.ahead == RESERVE_AHEAD
        assert clients.run_pacer(config) is clients.run_pacer(config)
        assert clients.run_pacer(config).rate == RATE
        assert clients.run_pacer(config).late_after == LATE_AFTER
        assert clients.token_pacer(config).rate == PACING_MARGIN
    assert clients.run_pacer(shared) is not clients.run_pacer(alone)


# --- the day's use, read by people ------------------------------------------------------


async def test_usage_is_answered_by_the_api_and_the_command_alike(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests paced by the app's pacer are what GET /api/usage and `ccexport usage`
    report; neither names the key, only its label."""
    key = f"usage-key-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("CTCT_CLIENT_ID", key)
    monkeypatch.setenv("CTCT_DAILY_QUOTA", "500")
    pacer = clients.run_pacer(Config.from_mapping(os.environ))
    for _ in range(3):
        await pacer.wait()
    answer = await call(http_api.key_usage, "GET", "usage")
    assert answer.status_code == 200
    day = time.strftime("%Y-%m-%d", time.gmtime())
    expected = {
        "key": key_label(key),
        "day": day,
        "used": 3,
        "limit": 500,
        "left": 497,
        "stopped_until": None,
    }
    assert response_json(answer) == {**expected, "resets_at": ANY}
    command = subprocess.run(
        [sys.executable, "-m", "shared.workstation.cli", "usage", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    assert json.loads(command.stdout) == response_json(answer)
    assert key not in command.stdout
    text = subprocess.run(
        [sys.executable, "-m", "shared.workstation.cli", "usage"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{day} (UTC): 3 of 500 requests used, 497 left" in text
    assert f"the storage account's {app_env.exports} container (pacing/)" in text
    assert key not in text


def test_usage_without_a_key_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CTCT_CLIENT_ID"}
    done = subprocess.run(
        [sys.executable, "-m", "shared.workstation.cli", "usage"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "CTCT_CLIENT_ID is not set" in done.stderr


async def test_the_days_count_survives_a_restart_of_the_storage(tmp_path: Path) -> None:
    """Azurite keeping its data on disk, stopped and started again: the key's record
    (the day's count, the next slot) is still there for a new pacer."""
    port = free_port()
    on_disk = azurite_command(port)
    on_disk.remove("--inMemoryPersistence")
    limit = on_disk.index("--extentMemoryLimit")  # only with --inMemoryPersistence
    del on_disk[limit : limit + 2]
    cmd = [*on_disk, "--location", str(tmp_path / "azurite")]
    connection = azurite_connection_string(port)
    with running(cmd, port, cwd=tmp_path):
        container = ContainerClient.from_connection_string(connection, "exports")
        pacer = Pacer(RATE, record=BlobRecord(container, "pacing/key.json"))
        for _ in range(3):
            await pacer.wait()
    with running(cmd, port, cwd=tmp_path):
        container = ContainerClient.from_connection_string(connection, "exports")
        again = Pacer(RATE, record=BlobRecord(container, "pacing/key.json"))
        assert again.usage().used == 3
        await again.wait()
        assert again.usage().used == 4
