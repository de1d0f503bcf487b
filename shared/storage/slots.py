"""At most a few holders at once among all the processes of one machine.

For work bound by the machine's cores, where more at once only makes every one of
them late: twenty runs preparing side by side on two cores all finish after twenty
prepares' time, and none sends a request before then, while two at a time lets the
first send after one prepare's time and keeps the rest coming. It also bounds the
memory that many prepares on one instance hold together.

A slot is an exclusive ``flock`` on one of ``count`` files in a folder of the
system's temporary folder, which every process of the machine (every ``ccexport``
command, every Functions worker of an instance) sees. The kernel drops the lock with
a process that dies holding it, so nobody waits for the dead. Waiters try the slots
again every ``poll`` seconds: a prepare lasts far longer, and there is no queue to
keep or to leave behind.

When the folder cannot be used (a read-only disk, another user's folder), the work
goes ahead without a slot: this is about speed, never about correctness.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def machine_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_folder() -> Path:
    return Path(tempfile.gettempdir()) / f"ccexport-slots-{os.getuid()}"


class MachineSlots:
    """``count`` slots named ``name``, shared by every process on this machine."""

    def __init__(
        self, name: str, count: int, *, folder: Path | None = None, poll: float = 0.05
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.name = name
        self.count = count
        self.folder = folder or default_folder()
        self.poll = poll

    @contextlib.contextmanager
    def hold(self) -> Iterator[float]:
        """Hold one slot for the block; yields the seconds it waited for it."""
        began = time.monotonic()
        fd: int | None = None
        try:
            fd = self._take()
        except OSError as exc:
            log.debug("%s: no slot folder (%s); going ahead without one", self.name, exc)
        try:
            yield 0.0 if fd is None else time.monotonic() - began
        finally:
            if fd is not None:
                os.close(fd)  # closing releases the flock

    def _take(self) -> int:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths = [self.folder / f"{self.name}-{n}.lock" for n in range(self.count)]
        while True:
            random.shuffle(paths)  # no slot is everyone's first try
            for path in paths:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                except OSError:
                    os.close(fd)
                    raise
                return fd
            time.sleep(self.poll * random.uniform(0.5, 1.5))  # noqa: S311 - not a secret
