"""A small record read and changed whole, atomically, by every process that shares it.

For state a few dozen bytes long that many processes change many times a second (the
pacer's next free slot and its day's count): ``update(change)`` reads the record,
applies ``change`` and writes the result as one step, so two processes never both
act on the same old value. Three places to keep it, one interface:

- ``MemoryRecord``: one process (a thread lock).
- ``FileRecord``: the processes of one machine (``flock`` on the file).
- ``BlobRecord``: every process and instance that reaches one storage account
  (optimistic concurrency: a write names the ETag it read, and a change someone made
  in between makes it read and apply again). No lease: a process killed in the
  middle leaves the record as it was, and nobody waits for it.

``change`` may be called more than once for one update (after a conflict), so it must
depend only on what it is given. Blocking calls: async callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shared.errors import CcexportError

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

Change = Callable[[bytes | None], bytes]
"""What a record becomes, from what it is (None: there is none yet)."""

RECORD_BYTES = 4096
"""The most a record holds: the file form reads this much."""


class RecordError(CcexportError):
    """A shared record could not be read or changed."""


class Record(Protocol):
    """One small record shared by whoever opens the same one."""

    remote: bool
    """True when each call goes over the network (callers on an event loop use a thread)."""

    def read(self) -> bytes | None:
        """What the record holds, or None when there is none yet."""
        ...

    def update(self, change: Change) -> bytes:
        """Replace the record by ``change(old)`` atomically; returns what was written."""
        ...


class MemoryRecord:
    """A record in this process only."""

    remote = False

    def __init__(self) -> None:
        self._data: bytes | None = None
        self._lock = threading.Lock()

    def read(self) -> bytes | None:
        return self._data

    def update(self, change: Change) -> bytes:
        with self._lock:
            self._data = change(self._data)
            return self._data


class FileRecord:
    """A record in a file (0600, its folder 0700) changed under ``flock``.

    The lock is held for microseconds, and the kernel drops it with a process that
    dies holding it.
    """

    remote = False

    def __init__(self, path: Path) -> None:
        self.path = path

    def _open(self) -> int:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def read(self) -> bytes | None:
        if not self.path.exists():
            return None  # a look makes nothing
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return os.pread(fd, RECORD_BYTES, 0) or None
        finally:
            os.close(fd)  # closing releases the flock

    def update(self, change: Change) -> bytes:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = change(os.pread(fd, RECORD_BYTES, 0) or None)
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            return data
        finally:
            os.close(fd)


class BlobRecord:
    """A record as one block blob, changed with If-Match on the ETag it was read at.

    A conflict (someone wrote between our read and our write) costs one more read and
    write, after a pause of a few milliseconds that grows with each conflict; after
    ``attempts`` conflicts in a row the update gives up with a RecordError.
    """

    remote = True

    def __init__(self, container: ContainerClient, name: str, *, attempts: int = 60) -> None:
        self.container = container
        self.blob = container.get_blob_client(name)
        self._attempts = attempts
        self.conflicts = 0
        """Writes that found the record changed since it was read (for measurements)."""
        self.writes = 0
        self.reads = 0

    def _get(self) -> tuple[bytes | None, str | None]:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - Blob only

        self.reads += 1
        try:
            download = self.blob.download_blob()
            return download.readall(), download.properties.etag
        except ResourceNotFoundError:
            return None, None

    def read(self) -> bytes | None:
        try:
            return self._get()[0]
        except CcexportError:
            raise
        except Exception as exc:  # the SDK's errors are many; the message says which
            raise RecordError(f"cannot read {self.blob.blob_name}: {type(exc).__name__}") from exc

    def update(self, change: Change) -> bytes:
        from azure.core import MatchConditions  # noqa: PLC0415 - Blob only
        from azure.core.exceptions import (  # noqa: PLC0415
            AzureError,
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        for attempt in range(self._attempts):
            try:
                old, etag = self._get()
                data = change(old)
                if etag is None:
                    self._create(data)
                else:
                    self.blob.upload_blob(
                        data,
                        overwrite=True,
                        etag=etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                self.writes += 1
                return data
            except (ResourceModifiedError, ResourceExistsError):
                self.conflicts += 1
            except ResourceNotFoundError:
                self.conflicts += 1  # deleted between the read and the write
            except AzureError as exc:
                raise RecordError(
                    f"cannot change {self.blob.blob_name}: {type(exc).__name__}"
                ) from exc
            time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))  # noqa: S311 - jitter
        raise RecordError(
            f"{self.blob.blob_name} kept changing under {self._attempts} tries to change it"
        )

    def _create(self, data: bytes) -> None:
        """Write the first version; a race lost to another creator is a conflict."""
        from azure.core.exceptions import (  # noqa: PLC0415 - Blob only
            ResourceExistsError,
            ResourceNotFoundError,
        )

        try:
            self.blob.upload_blob(data, overwrite=False)
        except ResourceNotFoundError:
            # A fresh account: the container is missing. Make it once, then try again.
            with contextlib.suppress(ResourceExistsError):
                self.container.create_container()
            self.blob.upload_blob(data, overwrite=False)
