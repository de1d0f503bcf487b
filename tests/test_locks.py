"""One holder at a time: file locks across real processes, blob leases on Azurite."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.storage.blob.aio import BlobLeaseClient, ContainerClient

from shared.storage.locks import BlobLeaseLocks, FileLocks, HeldLock, LockLost, Locks, LockTimeout
from tests.support.services import ROOT

# --- file locks ----------------------------------------------------------------------

_CONTENDER = """
import asyncio, os, sys, time
from pathlib import Path
from shared.storage.locks import FileLocks, LockTimeout

async def main() -> int:
    home, log = Path(sys.argv[1]), Path(sys.argv[2])
    rounds, timeout = int(sys.argv[3]), float(sys.argv[4])
    locks = FileLocks(home, poll_interval=0.01)
    print("ready", flush=True)
    go = log.with_suffix(".go")
    while rounds > 1 and not go.exists():  # start together, so they contend
        time.sleep(0.005)
    for _ in range(rounds):
        try:
            async with locks.hold("ctct-refresh", timeout=timeout) as held:
                with log.open("a") as f:
                    f.write(f"enter {os.getpid()} {int(held.waited)}\\n")
                if rounds == 1:
                    print("held", flush=True)
                time.sleep(float(sys.argv[5]))  # block the whole process, like real work
                with log.open("a") as f:
                    f.write(f"exit {os.getpid()}\\n")
        except LockTimeout:
            return 3
    return 0

sys.exit(asyncio.run(main()))
"""


def _contender(
    home: Path, log: Path, *, rounds: int, timeout: float = 30.0, work: float = 0.01
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CONTENDER,
            str(home),
            str(log),
            str(rounds),
            str(timeout),
            str(work),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _finish(proc: subprocess.Popen[str]) -> int:
    code = proc.wait(timeout=30)
    if proc.stdout:
        proc.stdout.close()
    return code


def test_file_lock_admits_one_process_at_a_time(tmp_path: Path) -> None:
    log = tmp_path / "log"
    procs = [_contender(tmp_path, log, rounds=8) for _ in range(3)]
    log.with_suffix(".go").touch()
    assert [_finish(p) for p in procs] == [0, 0, 0]
    lines = log.read_text().splitlines()
    assert len(lines) == 3 * 8 * 2
    for enter, exit_ in zip(lines[::2], lines[1::2], strict=True):
        kind, pid, _waited = enter.split()
        assert kind == "enter"
        assert exit_ == f"exit {pid}"  # nobody entered before the holder left
    assert len({line.split()[1] for line in lines}) == 3
    assert any(line.endswith(" 1") for line in lines[::2])  # some had to wait


async def test_file_lock_times_out_while_another_process_holds_it(tmp_path: Path) -> None:
    holder = _contender(tmp_path, tmp_path / "log", rounds=1, work=3.0)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="ctct-refresh"):
        async with FileLocks(tmp_path).hold("ctct-refresh", timeout=0.3):
            pytest.fail("entered a lock another process holds")
    assert 0.3 <= time.monotonic() - started < 1.5
    holder.send_signal(signal.SIGKILL)
    _finish(holder)


async def test_file_lock_is_freed_when_its_holder_dies(tmp_path: Path) -> None:
    holder = _contender(tmp_path, tmp_path / "log", rounds=1, work=60.0)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    _finish(holder)
    started = time.monotonic()
    async with FileLocks(tmp_path).hold("ctct-refresh", timeout=5) as held:
        assert held.name == "ctct-refresh"
    assert time.monotonic() - started < 0.5  # no stale lock to wait out


async def _take_turns(locks: Locks, name: str, *, timeout: float, inside: float) -> None:
    """Two tasks want one lock: the second gets in only after the first is out, and
    is the one told it waited."""
    order: list[str] = []
    a_inside = asyncio.Event()

    async def worker(tag: str) -> HeldLock:
        async with locks.hold(name, timeout=timeout) as held:
            a_inside.set()
            order.append(f"in {tag}")
            await asyncio.sleep(inside)
            order.append(f"out {tag}")
            return held

    first = asyncio.create_task(worker("a"))
    await a_inside.wait()
    a, b = await asyncio.gather(first, worker("b"))
    assert order == ["in a", "out a", "in b", "out b"]
    assert (a.waited, b.waited) == (False, True)


async def test_file_lock_between_tasks_reports_who_waited(tmp_path: Path) -> None:
    locks = FileLocks(tmp_path, poll_interval=0.01)
    await _take_turns(locks, "refresh", timeout=5, inside=0.1)
    assert stat.S_IMODE(os.stat(locks.path_of("refresh")).st_mode) == 0o600
    async with locks.hold("another", timeout=0) as other:  # names are independent
        assert not other.waited


# --- blob leases on Azurite -----------------------------------------------------------


@pytest.fixture
async def container(azurite: str) -> AsyncIterator[ContainerClient]:
    """A fresh container name that does not exist yet: the lock must create it."""
    client = ContainerClient.from_connection_string(azurite, f"locks-{uuid.uuid4().hex[:12]}")
    async with client:
        yield client


def _leases(container: ContainerClient, *, renew_every: float | None = None) -> BlobLeaseLocks:
    return BlobLeaseLocks(container, lease_seconds=15, poll_interval=0.05, renew_every=renew_every)


@pytest.mark.azurite
async def test_lease_creates_its_blob_and_admits_one_holder(container: ContainerClient) -> None:
    locks = _leases(container)
    await _take_turns(locks, "ctct-refresh", timeout=10, inside=0.2)
    props = await container.get_blob_client(locks.blob_name("ctct-refresh")).get_blob_properties()
    assert props.lease.state == "available"  # released at exit, not left to expire


@pytest.mark.azurite
async def test_lease_times_out_while_another_instance_holds_it(
    container: ContainerClient, azurite: str
) -> None:
    other_instance = ContainerClient.from_connection_string(azurite, container.container_name)
    async with other_instance, _leases(other_instance).hold("refresh", timeout=5) as held:
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="refresh"):
            async with _leases(container).hold("refresh", timeout=0.3):
                pytest.fail("entered a leased lock")
        assert 0.3 <= time.monotonic() - started < 1.5
        held.ensure_held()


@pytest.mark.azurite
async def test_lease_is_renewed_while_held(container: ContainerClient) -> None:
    locks = _leases(container, renew_every=0.1)
    async with locks.hold("refresh", timeout=5) as held:
        await asyncio.sleep(0.5)
        assert held.renewals >= 2
        assert not held.lost
    async with locks.hold("refresh", timeout=0.5) as again:
        assert not again.waited


@pytest.mark.azurite
async def test_a_broken_lease_is_reported_lost(container: ContainerClient) -> None:
    locks = _leases(container, renew_every=0.05)
    async with locks.hold("refresh", timeout=5) as held:
        blob = container.get_blob_client(locks.blob_name("refresh"))
        await BlobLeaseClient(blob).break_lease(lease_break_period=0)
        thief = BlobLeaseClient(blob)
        await thief.acquire(lease_duration=15)
        await asyncio.sleep(0.2)
        assert held.lost
        with pytest.raises(LockLost):
            held.ensure_held()
    # The old holder's exit left the new holder's lease alone.
    props = await blob.get_blob_properties()
    assert props.lease.state == "leased"
    await thief.release()


def test_lease_duration_must_be_what_the_service_allows() -> None:
    container = ContainerClient.from_connection_string(
        "UseDevelopmentStorage=true", "never-contacted"
    )
    for bad in (5, 61):
        with pytest.raises(ValueError, match="15 to 60"):
            BlobLeaseLocks(container, lease_seconds=bad)
