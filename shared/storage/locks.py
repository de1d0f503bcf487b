"""Named locks that hold across processes and machines: one token refresh at a time.

Constant Contact rotates refresh tokens, so two workers refreshing at once would
each spend the same refresh token and one connection would be lost. Whoever holds
the lock refreshes; whoever waited re-reads the store (`HeldLock.waited` says so).

Two implementations of one interface: a file lock (flock) under CCEXPORT_HOME for the
command line, and a blob lease for every instance of the function app.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobClient, BlobLeaseClient, ContainerClient

from shared.errors import CcexportError
from shared.storage.names import storage_name

log = logging.getLogger(__name__)


class LockError(CcexportError):
    """A lock could not be taken or kept."""


class LockTimeout(LockError):
    """Someone else held the lock for longer than we were willing to wait."""


class LockLost(LockError):
    """The lock expired or was broken while held; work done under it may race."""


class HeldLock:
    """What the holder of a lock gets: whether it had to wait, and whether it still holds."""

    def __init__(self, name: str, *, waited: bool) -> None:
        self.name = name
        self.waited = waited
        self.lost = False
        self.renewals = 0

    def ensure_held(self) -> None:
        """Raise LockLost if the lock is gone: call before writing what it protects."""
        if self.lost:
            raise LockLost(f"lost the lock {self.name!r} while holding it")


class Locks(Protocol):
    """A family of named locks."""

    def hold(self, name: str, *, timeout: float = 60.0) -> AbstractAsyncContextManager[HeldLock]:
        """Wait up to `timeout` seconds for the lock, hold it for the block, release it."""
        ...


# --- local: flock --------------------------------------------------------------------


class FileLocks:
    """Locks as `flock` on files under `<home>/locks/` (POSIX).

    The kernel drops the lock when the holder's process dies, so a crashed command
    never leaves a stale lock behind. Lock files are never deleted: deleting one
    while another process waits on it would let two holders in.
    """

    def __init__(self, home: Path, *, poll_interval: float = 0.05) -> None:
        self._dir = home / "locks"
        self._poll = poll_interval

    def path_of(self, name: str) -> Path:
        return self._dir / f"{storage_name(name)}.lock"

    @asynccontextmanager
    async def hold(self, name: str, *, timeout: float = 60.0) -> AsyncIterator[HeldLock]:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path_of(name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            waited = await self._acquire(fd, name, timeout)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                yield HeldLock(name, waited=waited)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def _acquire(self, fd: int, name: str, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return waited
            except BlockingIOError:
                pass
            if loop.time() >= deadline:
                raise LockTimeout(f"lock {name!r} still held by another process after {timeout:g}s")
            waited = True
            await asyncio.sleep(self._poll)


# --- Azure: blob leases ------------------------------------------------------------


class BlobLeaseLocks:
    """Locks as leases on blobs `<prefix><name>` in one container.

    A lease lasts `lease_seconds` (15–60, the service's range) and is renewed in the
    background while held, so a crashed instance frees the lock within that time.
    If renewal fails for longer than a lease, the holder is told (`HeldLock.lost`).
    """

    def __init__(
        self,
        container: ContainerClient,
        *,
        lease_seconds: int = 30,
        renew_every: float | None = None,
        poll_interval: float = 0.5,
        prefix: str = "locks/",
    ) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("a blob lease lasts 15 to 60 seconds")
        self._container = container
        self._lease_seconds = lease_seconds
        self._renew_every = renew_every if renew_every is not None else lease_seconds / 3
        self._poll = poll_interval
        self._prefix = prefix

    def blob_name(self, name: str) -> str:
        return f"{self._prefix}{storage_name(name)}"

    @asynccontextmanager
    async def hold(self, name: str, *, timeout: float = 60.0) -> AsyncIterator[HeldLock]:
        blob = self._container.get_blob_client(self.blob_name(name))
        lease, waited = await self._acquire(blob, name, timeout)
        held = HeldLock(name, waited=waited)
        renewer = asyncio.create_task(self._keep(lease, held), name=f"renew lease {name}")
        try:
            yield held
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not held.lost:
                try:
                    await lease.release()
                except AzureError as exc:
                    # It expires on its own; the next holder only waits longer.
                    log.warning("could not release lock %r: %s", name, type(exc).__name__)

    async def _acquire(
        self, blob: BlobClient, name: str, timeout: float
    ) -> tuple[BlobLeaseClient, bool]:
        # The Blob SDK loads only where leases are used: a run on a laptop (file locks)
        # starts without waiting for its import.
        from azure.storage.blob.aio import BlobLeaseClient  # noqa: PLC0415 - see above

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waited = False
        while True:
            lease = BlobLeaseClient(blob)
            try:
                await lease.acquire(lease_duration=self._lease_seconds)
                return lease, waited
            except ResourceNotFoundError:
                await self._create(blob)
                continue
            except ResourceExistsError:
                pass  # leased by someone else
            except HttpResponseError as exc:
                code = getattr(exc, "error_code", None) or ""
                raise LockError(
                    f"cannot lease lock {name!r}: HTTP {exc.status_code} {code}"
                ) from None
            except AzureError as exc:
                raise LockError(f"cannot lease lock {name!r}: {type(exc).__name__}") from None
            if loop.time() >= deadline:
                raise LockTimeout(
                    f"lock {name!r} still leased by another holder after {timeout:g}s"
                )
            waited = True
            await asyncio.sleep(self._poll)

    async def _create(self, blob: BlobClient) -> None:
        """Make the lock blob (and its container) exist; losing a race to create is fine."""
        with contextlib.suppress(ResourceExistsError):
            try:
                await blob.upload_blob(b"", overwrite=False)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):
                    await self._container.create_container()
                await blob.upload_blob(b"", overwrite=False)

    async def _keep(self, lease: BlobLeaseClient, held: HeldLock) -> None:
        """Renew until cancelled; mark the lock lost once renewal cannot succeed."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                await lease.renew()
            except HttpResponseError as exc:
                # 409/412: the lease was broken or taken over; it will not come back.
                if exc.status_code in {409, 412} or loop.time() - last_ok >= self._lease_seconds:
                    self._lose(held, exc)
                    return
                continue
            except AzureError as exc:
                if loop.time() - last_ok >= self._lease_seconds:
                    self._lose(held, exc)
                    return
                continue
            last_ok = loop.time()
            held.renewals += 1

    @staticmethod
    def _lose(held: HeldLock, exc: AzureError) -> None:
        held.lost = True
        log.warning("lost the lock %r: %s", held.name, type(exc).__name__)
