"""Writing a local file whole or not at all, written once for every local store.

The data goes to a temporary file in the same folder (created 0600 by mkstemp) that is
then renamed over the target: a reader, or a process killed mid-write, sees the old
contents or the new, never half. ``durable`` also flushes the data to disk first, for
what must survive a power cut (tokens, catalog documents).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, durable: bool = False) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
