"""Small JSON documents with optimistic concurrency: the app's own records in storage.

Export definitions, connections and the run index are a few kilobytes each and are
changed by people through the HTTP API, sometimes two at once. Each document carries
an ETag; an update names the ETag it read (If-Match) and fails if someone changed the
document since, and a create fails if the document already exists. No database: a
blob container in Azure, a folder under CCEXPORT_HOME for the command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

from shared.errors import CcexportError
from shared.storage.atomic import write_atomically

_JSON = ContentSettings(content_type="application/json")


class DocumentError(CcexportError):
    """A document could not be read or written as asked."""


class DocumentExists(DocumentError):
    """A create found the document already there."""


class DocumentChanged(DocumentError):
    """An update or delete named an ETag that is no longer the document's (or it is gone)."""


@dataclass(frozen=True)
class Document:
    name: str
    data: Any
    etag: str
    last_modified: datetime | None = None


class Documents(Protocol):
    """Named JSON documents ('/'-separated names) with ETags."""

    async def get(self, name: str) -> Document | None:
        """The document, or None when there is none."""
        ...

    async def create(self, name: str, data: Any) -> str:
        """Store a new document; DocumentExists if it is there. Returns its ETag."""
        ...

    async def replace(self, name: str, data: Any, etag: str) -> str:
        """Overwrite the document if its ETag is still ``etag``; else DocumentChanged."""
        ...

    async def delete(self, name: str, etag: str | None = None) -> bool:
        """Remove it (only at ``etag`` when given); True when there was one."""
        ...

    async def names(self, prefix: str = "") -> list[str]:
        """Names that start with prefix, sorted."""
        ...


def check_document_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DocumentError(f"invalid document name {name[:80]!r}")
    return name


def _encode(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def _decode(raw: bytes, where: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise DocumentError(f"{where} is not valid JSON") from None


# --- Azure: a blob container ----------------------------------------------------------


class BlobDocuments:
    """Documents as blobs in one container; the blob's own ETag is the document's."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    def _where(self, name: str) -> str:
        return f"{self.container.container_name}/{name}"

    async def get(self, name: str) -> Document | None:
        blob = self.container.get_blob_client(check_document_name(name))
        try:
            download = await blob.download_blob()
            raw = await download.readall()
        except ResourceNotFoundError:
            return None
        props = download.properties
        return Document(name, _decode(raw, self._where(name)), props.etag, props.last_modified)

    async def create(self, name: str, data: Any) -> str:
        blob = self.container.get_blob_client(check_document_name(name))
        body = _encode(data)
        for first in (True, False):
            try:
                result = await blob.upload_blob(body, overwrite=False, content_settings=_JSON)
            except ResourceExistsError:
                raise DocumentExists(f"{self._where(name)} already exists") from None
            except ResourceNotFoundError:
                # The container itself is missing (a fresh local account): make it once.
                if not first:
                    raise
                with contextlib.suppress(ResourceExistsError):
                    await self.container.create_container()
                continue
            return str(result["etag"])
        raise AssertionError("unreachable")  # pragma: no cover

    async def replace(self, name: str, data: Any, etag: str) -> str:
        blob = self.container.get_blob_client(check_document_name(name))
        try:
            result = await blob.upload_blob(
                _encode(data),
                overwrite=True,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                content_settings=_JSON,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise DocumentChanged(
                f"{self._where(name)} changed since it was read (or was deleted)"
            ) from None
        return str(result["etag"])

    async def delete(self, name: str, etag: str | None = None) -> bool:
        blob = self.container.get_blob_client(check_document_name(name))
        try:
            if etag is None:
                await blob.delete_blob()
            else:
                await blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return False
        except ResourceModifiedError:
            raise DocumentChanged(f"{self._where(name)} changed since it was read") from None
        return True

    async def names(self, prefix: str = "") -> list[str]:
        try:
            listing = self.container.list_blob_names(name_starts_with=prefix)
            return sorted([name async for name in listing])
        except ResourceNotFoundError:
            return []


# --- the command line: a folder ---------------------------------------------------------


class FolderDocuments:
    """Documents as files under a folder; the ETag is a digest of the file's bytes.

    One flock on ``.lock`` makes check-then-write atomic across the processes of one
    machine; writes go to a temporary file first and are renamed into place.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / check_document_name(name)

    @staticmethod
    def _etag(raw: bytes) -> str:
        return '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self, name: str) -> tuple[bytes, float] | None:
        path = self._path(name)
        try:
            return path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            return None

    def _write(self, name: str, raw: bytes) -> str:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(path, raw, durable=True)
        return self._etag(raw)

    async def get(self, name: str) -> Document | None:
        found = self._read(name)
        if found is None:
            return None
        raw, mtime = found
        modified = datetime.fromtimestamp(mtime, tz=UTC)
        return Document(name, _decode(raw, str(self._path(name))), self._etag(raw), modified)

    async def create(self, name: str, data: Any) -> str:
        with self._flock():
            if self._path(name).exists():
                raise DocumentExists(f"{self._path(name)} already exists")
            return self._write(name, _encode(data))

    async def replace(self, name: str, data: Any, etag: str) -> str:
        with self._flock():
            found = self._read(name)
            if found is None or self._etag(found[0]) != etag:
                raise DocumentChanged(f"{self._path(name)} changed since it was read")
            return self._write(name, _encode(data))

    async def delete(self, name: str, etag: str | None = None) -> bool:
        with self._flock():
            found = self._read(name)
            if found is None:
                return False
            if etag is not None and self._etag(found[0]) != etag:
                raise DocumentChanged(f"{self._path(name)} changed since it was read")
            self._path(name).unlink()
            return True

    async def names(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        found = [
            path.relative_to(self.root).as_posix()
            for path in self.root.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        ]
        return sorted(n for n in found if n.startswith(prefix))
