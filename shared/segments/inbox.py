"""The inbox: which Customer Insights run a file belongs to, when that run is complete,
and the key a run of it is started under.

Customer Insights writes an export to Blob Storage as::

    <root>/<Export>/model.json
    <root>/<Export>/<Table>/yyyy/MM/dd/HHmm/<Table>_1.csv ... <Table>_N.csv

one blob at a time, with no completion marker. A run covers a whole run folder, so a
file's arrival only says "look at its folder". The folder counts as complete when

1. ``model.json`` of its export was written after every part in it (Customer Insights
   writes model.json last). Blob times have one-second resolution, so a tie is not
   taken as "after": such a folder waits for the quiet time instead; or
2. nothing in it changed for the quiet time (``RUN_QUIET_SECONDS``): for exports
   whose model.json comes first or not at all.

Until then a blob event starts nothing; a later event of the same run, or the timer,
finds the folder complete and starts it. Events arrive in any order and more than
once, so every decision is taken from a fresh listing, never from the event itself.

When model.json arrives before the last part, the model.json event sees the parts
present then and may start a run over them; the last part's event then finds a part
newer than model.json, so it waits for the quiet time, and the next event or timer
run after it starts the whole folder. Its ETags differ, so its run key differs, and
the full folder is sent (imports upsert, so the early partial run only cost requests).

The run key: ``<export name>.<32 hex>``, the first 32 hex digits of the SHA-256 of
the lines ``ccexport-run-1``, the export definition's name, the inbox container, the
folder and the sorted ETags of its parts (quotes stripped). The same files under the same
definition always give the same key, so a duplicate event finds the run already
there; a re-export (new ETags) gets a new key. Only letters, digits, '-' and '.':
nothing a Durable instance id forbids (``/ \\ ? #``), and the export name comes first
so one export's runs can be listed by prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from shared.segments.layout import (
    MODEL_FILE,
    parse_blob_name,
)
from shared.storage.files import BLOB_SCHEME, raise_unreadable

if TYPE_CHECKING:
    from shared.exports.definitions import ExportDefinition

RUN_KEY_DIGITS = 32


@dataclass(frozen=True)
class BlobInfo:
    """What a listing says of one blob: enough to order and identify it, no content."""

    name: str
    etag: str
    last_modified: datetime


@dataclass(frozen=True)
class RunFolder:
    """One run of one table: the part files Customer Insights wrote into its folder."""

    container: str
    root: str
    export: str
    table: str
    stamp: str
    parts: tuple[BlobInfo, ...]
    local_root: Path | None = None
    """The inbox folder on this machine, when the inbox is a folder (``ccexport serve``)."""

    @property
    def path(self) -> str:
        return f"{self.root}{self.export}/{self.table}/{self.stamp}"

    @property
    def export_folder(self) -> str:
        return f"{self.root}{self.export}"

    @property
    def source(self) -> str:
        """The folder as the orchestrator's input names it: az://container/path, or
        its path on this machine when the inbox is a local folder."""
        if self.local_root is not None:
            return str(self.local_root / self.path)
        return f"{BLOB_SCHEME}{self.container}/{self.path}"

    @property
    def last_modified(self) -> datetime | None:
        return max((p.last_modified for p in self.parts), default=None)

    def matched_by(self, definition: ExportDefinition) -> bool:
        return definition.matches(self.root, self.export, self.table)


@dataclass(frozen=True)
class Completeness:
    complete: bool
    reason: str


def completeness(
    folder: RunFolder, model: BlobInfo | None, now: datetime, quiet_seconds: float
) -> Completeness:
    """Whether a run folder is whole (see the module docstring), and why."""
    newest = folder.last_modified
    if newest is None:
        return Completeness(False, "no part files yet")
    if model is not None and model.last_modified > newest:
        return Completeness(True, "model.json was written after the parts")
    quiet_for = (now - newest).total_seconds()
    if quiet_for >= quiet_seconds:
        return Completeness(True, f"no change for {quiet_for:.0f}s")
    return Completeness(
        False,
        f"waiting: model.json is not newer than the parts and they changed "
        f"{quiet_for:.0f}s ago (quiet time {quiet_seconds:.0f}s)",
    )


def run_key(export_name: str, folder: RunFolder) -> str:
    """The deterministic run id of sending this folder under this definition."""
    etags = sorted(p.etag.strip('"') for p in folder.parts)
    material = "\n".join(["ccexport-run-1", export_name, folder.container, folder.path, *etags])
    digest = hashlib.sha256(material.encode()).hexdigest()[:RUN_KEY_DIGITS]
    return f"{export_name}.{digest}"


def export_of_run(run_id: str) -> str | None:
    """The export name a run key starts with (None for a key not made here)."""
    name, dot, digest = run_id.rpartition(".")
    if not dot or len(digest) != RUN_KEY_DIGITS or not name:
        return None
    return name


def group_folders(
    container: str, blobs: Iterable[BlobInfo], local_root: Path | None = None
) -> list[RunFolder]:
    """Run folders of a listing, each with its parts in name order."""
    groups: dict[tuple[str, str, str, str], list[BlobInfo]] = {}
    for blob in blobs:
        found = parse_blob_name(blob.name)
        if found is not None and found.table is not None and found.stamp is not None:
            key = (found.root, found.export, found.table, found.stamp)
            groups.setdefault(key, []).append(blob)
    return [
        RunFolder(
            container, *key, parts=tuple(sorted(parts, key=lambda p: p.name)), local_root=local_root
        )
        for key, parts in sorted(groups.items())
    ]


def newest_complete(
    folders: Iterable[RunFolder],
    models: dict[str, BlobInfo],
    now: datetime,
    quiet_seconds: float,
) -> list[RunFolder]:
    """Per table, its newest complete run folder (tables with none are left out)."""
    by_table: dict[tuple[str, str, str], list[RunFolder]] = {}
    for folder in folders:
        by_table.setdefault((folder.root, folder.export, folder.table), []).append(folder)
    found: list[RunFolder] = []
    for runs in by_table.values():
        for folder in sorted(runs, key=lambda f: f.stamp, reverse=True):
            model = models.get(folder.export_folder)
            if completeness(folder, model, now, quiet_seconds).complete:
                found.append(folder)
                break
    return found


class Listing(ABC):
    """An inbox's files as listings: names, ETags and times, never content."""

    local_root: Path | None = None

    @property
    @abstractmethod
    def name(self) -> str:
        """What errors call the inbox, and what run keys hold of where it is."""

    @abstractmethod
    async def list_files(self, prefix: str = "") -> list[BlobInfo]:
        """Every file whose name starts with prefix."""

    @abstractmethod
    async def model(self, export_folder: str) -> BlobInfo | None:
        """The export's model.json, if it has one."""

    async def run_folder(self, path: str) -> RunFolder | None:
        """The run folder at path as it is now; None when it holds no parts."""
        blobs = [b for b in await self.list_files(f"{path}/") if b.name.rpartition("/")[0] == path]
        folders = group_folders(self.name, blobs, self.local_root)
        return folders[0] if folders else None

    async def scan(self, prefix: str = "") -> tuple[list[RunFolder], dict[str, BlobInfo]]:
        """Every run folder under prefix, and each export folder's model.json."""
        blobs = await self.list_files(prefix)
        models: dict[str, BlobInfo] = {}
        for blob in blobs:
            path = parse_blob_name(blob.name)
            if path is not None and path.is_model:
                models[path.export_folder] = blob
        return group_folders(self.name, blobs, self.local_root), models


def _model_name(export_folder: str) -> str:
    return f"{export_folder}/{MODEL_FILE}" if export_folder else MODEL_FILE


class Inbox(Listing):
    """The inbox container in Blob Storage, where Customer Insights writes."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    @property
    def name(self) -> str:
        return str(self.container.container_name)

    async def list_files(self, prefix: str = "") -> list[BlobInfo]:
        found: list[BlobInfo] = []
        async for blob in self.container.list_blobs(name_starts_with=prefix):
            found.append(BlobInfo(blob.name, str(blob.etag), blob.last_modified))
        return found

    async def model(self, export_folder: str) -> BlobInfo | None:
        name = _model_name(export_folder)
        try:
            props = await self.container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobInfo(name, str(props.etag), props.last_modified)


class FolderInbox(Listing):
    """The inbox as a folder on this machine (``ccexport serve`` with no storage set).

    A file's time is when it arrived here and its ETag that time and its size, so a
    rewritten part gives the run a new key, as a re-uploaded blob does. Names starting
    with a dot (editors' and copy tools' temporary files) are not listed.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.local_root = self.root

    @property
    def name(self) -> str:
        return str(self.root)

    @staticmethod
    def _info(name: str, stat: os.stat_result) -> BlobInfo:
        # A copy that keeps the source's times (cp -p, rsync -a, Explorer) would look
        # older than it is by its mtime; its ctime is when it arrived here.
        arrived = max(stat.st_mtime_ns, stat.st_ctime_ns)
        etag = f'"{arrived:x}-{stat.st_size:x}"'
        return BlobInfo(name, etag, datetime.fromtimestamp(arrived / 1e9, UTC))

    def _walk(self, prefix: str) -> list[BlobInfo]:
        root = self.root
        start = (root / prefix.rpartition("/")[0]).resolve() if "/" in prefix else root
        if not start.is_relative_to(root):
            return []  # a name that climbs out of the inbox names nothing in it
        found: list[BlobInfo] = []
        for folder, dirs, names in os.walk(start, onerror=raise_unreadable):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file_name in sorted(names):
                if file_name.startswith("."):
                    continue
                path = Path(folder) / file_name
                name = path.relative_to(root).as_posix()
                if not name.startswith(prefix):
                    continue
                try:
                    found.append(self._info(name, path.stat()))
                except FileNotFoundError:
                    continue  # removed while listing
        return found

    async def list_files(self, prefix: str = "") -> list[BlobInfo]:
        return await asyncio.to_thread(self._walk, prefix)

    async def model(self, export_folder: str) -> BlobInfo | None:
        name = _model_name(export_folder)
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            return None
        try:
            return self._info(name, path.stat())
        except (FileNotFoundError, NotADirectoryError):
            return None
