"""Where segment files are read from and results written to: a local folder or a blob container.

Both look the same to the rest of the code: POSIX-style relative names, a recursive
listing, and binary streams. Reading streams; nothing here holds a whole file in memory.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import InputError

if TYPE_CHECKING:
    # The Azure SDK is loaded only when a blob is read: prepare on local files never
    # pays its memory.
    from azure.storage.blob import BlobServiceClient, ContainerClient, StorageStreamDownloader

BLOB_SCHEME = "az://"


class FileStore(Protocol):
    """A tree of files addressed by '/'-separated names relative to its root."""

    def describe(self, name: str) -> str:
        """How to name the file to a person (path or az:// address)."""

    def is_file(self, name: str) -> bool: ...

    def list_files(self, folder: str) -> list[str]:
        """Every file below folder, recursively, as names relative to the store's root."""

    def open(self, name: str) -> io.BufferedReader:
        """A buffered binary stream of the file, read lazily."""

    def read_bytes(self, name: str) -> bytes: ...


def raise_unreadable(error: OSError) -> None:
    """os.walk's onerror: an unreadable folder is an error, not an empty one."""
    if not isinstance(error, FileNotFoundError):
        raise error


class LocalFiles:
    """Files under a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / name if name else self.root

    def describe(self, name: str) -> str:
        return str(self._path(name))

    def is_file(self, name: str) -> bool:
        return self._path(name).is_file()

    def list_files(self, folder: str) -> list[str]:
        """Every file below ``folder``, but hidden ones: a name starting with a dot is a
        copy or download still being written, or a tool's own, never a part."""
        base = self._path(folder)
        found: list[str] = []
        for dirpath, dirs, files in os.walk(base, onerror=raise_unreadable):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                if not file.startswith("."):
                    found.append(Path(dirpath, file).relative_to(self.root).as_posix())
        return sorted(found)

    def open(self, name: str) -> io.BufferedReader:
        return self._path(name).open("rb")

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()


class _DownloadReader(io.RawIOBase):
    """A raw, forward-only stream over a blob download, so csv/gzip can read it in pieces."""

    def __init__(self, downloader: StorageStreamDownloader[bytes]) -> None:
        self._downloader = downloader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._downloader.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class BlobFiles:
    """Blobs in one container; names are blob names ('/'-separated virtual folders)."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    def describe(self, name: str) -> str:
        return f"{BLOB_SCHEME}{self.container.container_name}/{name}"

    def is_file(self, name: str) -> bool:
        return bool(name) and bool(self.container.get_blob_client(name).exists())

    def list_files(self, folder: str) -> list[str]:
        prefix = f"{folder.rstrip('/')}/" if folder else ""
        return sorted(b.name for b in self.container.list_blobs(name_starts_with=prefix))

    def open(self, name: str) -> io.BufferedReader:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        try:
            downloader = self.container.download_blob(name, max_concurrency=2)
        except ResourceNotFoundError:
            raise InputError(f"{self.describe(name)} does not exist") from None
        return io.BufferedReader(_DownloadReader(downloader), buffer_size=1 << 20)

    def read_bytes(self, name: str) -> bytes:
        return self.container.download_blob(name).readall()


def resolve(source: str, blob_service: BlobServiceClient | None) -> tuple[FileStore, str]:
    """Turn SOURCE (a local path or az://container/path) into a store and a name in it."""
    if source.startswith(BLOB_SCHEME):
        rest = source[len(BLOB_SCHEME) :]
        container, _, name = rest.partition("/")
        if not container:
            raise InputError(f"{source}: expected az://CONTAINER/PATH")
        if blob_service is None:
            raise InputError(
                f"{source} is in Blob Storage but no storage connection is set "
                "(set CCEXPORT_STORAGE_CONNECTION_STRING or AzureWebJobsStorage)"
            )
        return BlobFiles(blob_service.get_container_client(container)), name.strip("/")
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise InputError(f"{source} does not exist")
    # Rooted at the file system root, so model.json can be found in any folder above.
    anchor = Path(path.anchor)
    return LocalFiles(anchor), path.relative_to(anchor).as_posix()


def iter_ancestors(name: str) -> Iterator[str]:
    """'a/b/c' -> 'a/b', 'a', '' : the folders above a name, nearest first."""
    parts = name.split("/")[:-1] if name else []
    while parts:
        yield "/".join(parts)
        parts.pop()
    yield ""
