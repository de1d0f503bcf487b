"""Where the prepare stage writes: request bodies, the rejects file and the summary.

Output appears whole or not at all. Locally everything is written into a hidden
folder beside the target and moved into place at the end; in Blob Storage the
summary is written last, and a failed prepare deletes what it had uploaded. So an
input that turns out to be unusable halfway through leaves nothing behind to send.

The rejects file is the only place an email address is written. Cells that a
spreadsheet would run as a formula are prefixed with an apostrophe.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    # The Azure SDK is loaded by BlobOutput's methods only: prepare to a local folder
    # never pays its memory.
    from azure.storage.blob import ContainerClient

CHUNKS_FOLDER = "chunks"
REJECTS_FILE = "rejects.csv"
SUMMARY_FILE = "summary.json"
REJECTS_HEADER = ("row", "file", "line", "email", "reason", "detail")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def chunk_name(index: int) -> str:
    return f"{CHUNKS_FOLDER}/chunk-{index:05d}.json"


def neutralise(cell: str) -> str:
    """Keep a spreadsheet from running a cell as a formula (CSV injection)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


class RejectsWriter:
    """Writes rejects.csv rows to a text stream."""

    def __init__(self, stream: IO[str]) -> None:
        self._writer = csv.writer(stream, lineterminator="\r\n")
        self._writer.writerow(REJECTS_HEADER)

    def write(
        self, *, row: int, file: str, line: int, email: str, reason: str, detail: str = ""
    ) -> None:
        self._writer.writerow(
            (row, neutralise(file), line, neutralise(email), reason, neutralise(detail))
        )


class PreparedOutput(Protocol):
    def write_chunk(self, index: int, body: bytes) -> str:
        """Store one request body; returns its name relative to the output."""

    def rejects_stream(self) -> IO[str]: ...

    def write_file(self, name: str, data: bytes) -> str:
        """Store one more file beside the chunks (committed with them)."""

    def commit(self, summary: dict[str, Any]) -> str:
        """Write summary.json (``PrepareSummary.to_json()``) last and make everything
        visible; returns where the output is, for people."""

    def abort(self) -> None: ...


class LocalOutput:
    """DIR/chunks/chunk-NNNNN.json, DIR/rejects.csv, DIR/summary.json."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._work = Path(tempfile.mkdtemp(prefix=".ccexport-", dir=directory))
        (self._work / CHUNKS_FOLDER).mkdir()
        self._rejects: IO[str] | None = None
        self._extra: list[str] = []

    def write_chunk(self, index: int, body: bytes) -> str:
        name = chunk_name(index)
        (self._work / name).write_bytes(body)
        return name

    def write_file(self, name: str, data: bytes) -> str:
        (self._work / name).write_bytes(data)
        self._extra.append(name)
        return name

    def rejects_stream(self) -> IO[str]:
        if self._rejects is None:
            self._rejects = (self._work / REJECTS_FILE).open("w", encoding="utf-8", newline="")
        return self._rejects

    def commit(self, summary: dict[str, Any]) -> str:
        self.rejects_stream().close()
        (self._work / SUMMARY_FILE).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        for name in (CHUNKS_FOLDER, REJECTS_FILE, *self._extra, SUMMARY_FILE):
            target = self.directory / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            (self._work / name).rename(target)
        self._work.rmdir()
        return str(self.directory)

    def abort(self) -> None:
        if self._rejects is not None:
            self._rejects.close()
        shutil.rmtree(self._work, ignore_errors=True)


class BlobOutput:
    """The same files as blobs under a prefix (a run's staging folder)."""

    def __init__(self, container: ContainerClient, prefix: str) -> None:
        self.container = container
        self.prefix = prefix.strip("/")
        self._written: list[str] = []
        # Rejects are few in a healthy export; spill to disk past 8 MB.
        self._rejects = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+b")  # noqa: SIM115
        self._rejects_text = io.TextIOWrapper(self._rejects, encoding="utf-8", newline="")

    def _blob(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _upload(self, name: str, data: bytes | IO[bytes], content_type: str) -> None:
        from azure.storage.blob import ContentSettings  # noqa: PLC0415 - blob only

        blob = self._blob(name)
        self._written.append(blob)
        self.container.upload_blob(
            blob, data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
        )

    def write_chunk(self, index: int, body: bytes) -> str:
        name = chunk_name(index)
        self._upload(name, body, "application/json")
        return name

    def rejects_stream(self) -> IO[str]:
        return self._rejects_text

    def write_file(self, name: str, data: bytes) -> str:
        self._upload(name, data, "application/octet-stream")
        return name

    def commit(self, summary: dict[str, Any]) -> str:
        self._rejects_text.flush()
        self._rejects.seek(0)
        self._upload(REJECTS_FILE, self._rejects, "text/csv; charset=utf-8")
        self._rejects_text.close()
        self._upload(
            SUMMARY_FILE, orjson.dumps(summary, option=orjson.OPT_INDENT_2), "application/json"
        )
        return f"az://{self.container.container_name}/{self.prefix}"

    def abort(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        self._rejects_text.close()
        for blob in self._written:
            with contextlib.suppress(ResourceNotFoundError):
                self.container.delete_blob(blob)
