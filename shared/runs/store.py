"""Where a run keeps what it must not lose: staged chunk bodies, acceptance marks, the report.

The orchestrator carries only references; the bodies it refers to live here between
``prepare_segment`` and ``upload_chunk``, and the report lives here afterwards, where
the HTTP API and ``ccexport run`` read it (and the console its rejects file). Two
backends of one interface:

- a local folder (CCEXPORT_HOME, default ~/.ccexport)::

      runs/<run_id>/staging/chunks/chunk-NNNNN.json   request bodies, byte for byte
      runs/<run_id>/staging/summary.json              prepare's summary (written last)
      runs/<run_id>/staging/accepted/chunk-NNNNN.json the import's activity id, once accepted
      runs/<run_id>/report.json, runs/<run_id>/rejects.csv

- Blob Storage: the same names under ``<run_id>/`` in the private containers
  ``staging`` (bodies, summary, marks) and ``reports`` (report.json, rejects.csv).

Beside the bodies, staging holds what an incremental or mirror run decided before
sending: ``snapshot.bin`` (the segment's snapshot, kept by ``finish_run`` as the
export's next state when the run succeeds), ``mirror.npz`` (the removal plan) and
``removals.json`` (the membership activities already asked for). The export's state
itself is not a run's: it lives beside the runs (shared/exports/state.py).

The acceptance mark is what makes an upload idempotent: it is written right after
Constant Contact accepted a chunk, and an upload that finds it returns the recorded
activity id without sending again (an activity retried by Durable, or a run resumed
after the daily quota reset). The rejects file is the only file here with email
addresses in it; staged bodies hold contacts and are deleted once delivered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import orjson

from shared.exports.state import STATE_FOLDER, BlobStateStore, LocalStateStore, StateStore
from shared.prepare.outputs import (
    REJECTS_FILE,
    SUMMARY_FILE,
    BlobOutput,
    LocalOutput,
    PreparedOutput,
)
from shared.runs.ids import check_run_id
from shared.storage.atomic import write_atomically

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient

REPORT_FILE = "report.json"
ACCEPTED_FOLDER = "accepted"
STAGING_CONTAINER = "staging"
REPORTS_CONTAINER = "reports"


def accepted_name(index: int) -> str:
    return f"{ACCEPTED_FOLDER}/chunk-{index:05d}.json"


class RunStore(Protocol):
    """One run's staging area and reports, by run id."""

    def describe(self) -> str:
        """Where runs are kept, for people."""

    def staging_output(self, run_id: str) -> PreparedOutput:
        """Where prepare writes the run's bodies, rejects and summary."""

    def staging_location(self, run_id: str) -> str: ...

    def staged_summary(self, run_id: str) -> dict[str, Any] | None:
        """prepare's summary when an earlier attempt completed it, else None."""

    def read_chunk(self, run_id: str, name: str) -> bytes: ...

    def read_staged(self, run_id: str, name: str) -> bytes | None:
        """Another file of the staging area (a snapshot, a mirror plan), None if absent."""

    def write_staged(self, run_id: str, name: str, data: bytes) -> None:
        """Store a file in the staging area, whole or not at all."""

    def delete_chunk(self, run_id: str, name: str) -> None: ...

    def accepted(self, run_id: str, index: int) -> str | None:
        """The activity id of the chunk's accepted import, if one was recorded."""

    def mark_accepted(self, run_id: str, index: int, activity_id: str) -> None: ...

    def forget_accepted(self, run_id: str, index: int) -> None:
        """Drop the mark (its import failed), so a new run of the id sends it again."""

    def clear_staging(self, run_id: str) -> None:
        """Delete everything the run staged: all its contacts were delivered."""

    def publish_rejects(self, run_id: str) -> str | None:
        """Move rejects.csv beside the report; returns where it is (None if none)."""

    def read_rejects(self, run_id: str) -> Iterator[bytes] | None:
        """The published rejects.csv in pieces, as stored; None when the run has none.
        Read lazily: a large file is never held whole unless the reader does so."""

    def write_report(self, run_id: str, report: Mapping[str, Any]) -> str:
        """Store report.json; returns where it is."""

    def read_report(self, run_id: str) -> dict[str, Any] | None: ...

    def report_location(self, run_id: str) -> str: ...

    def list_reports(self) -> list[str]:
        """Run ids that have a report, sorted."""


def _json(data: Mapping[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)


_PIECE_BYTES = 1 << 20


def _pieces(stream: BinaryIO) -> Iterator[bytes]:
    """A file's bytes in pieces of 1 MB; the file is closed at its end (or when the
    reader stops early and drops the iterator)."""
    with stream:
        while piece := stream.read(_PIECE_BYTES):
            yield piece


# --- local folder ---------------------------------------------------------------------


class LocalRunStore:
    """Runs under a local folder (``CCEXPORT_HOME/runs``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _run(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def _staging(self, run_id: str) -> Path:
        return self._run(run_id) / "staging"

    def describe(self) -> str:
        return str(self.root)

    def staging_output(self, run_id: str) -> PreparedOutput:
        return LocalOutput(self._staging(run_id))

    def staging_location(self, run_id: str) -> str:
        return str(self._staging(run_id))

    def staged_summary(self, run_id: str) -> dict[str, Any] | None:
        try:
            data = orjson.loads((self._staging(run_id) / SUMMARY_FILE).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def read_chunk(self, run_id: str, name: str) -> bytes:
        return (self._staging(run_id) / name).read_bytes()

    def delete_chunk(self, run_id: str, name: str) -> None:
        (self._staging(run_id) / name).unlink(missing_ok=True)

    def read_staged(self, run_id: str, name: str) -> bytes | None:
        try:
            return (self._staging(run_id) / name).read_bytes()
        except FileNotFoundError:
            return None

    def write_staged(self, run_id: str, name: str, data: bytes) -> None:
        path = self._staging(run_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)

    def accepted(self, run_id: str, index: int) -> str | None:
        try:
            data = orjson.loads((self._staging(run_id) / accepted_name(index)).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        activity_id = data.get("activity_id") if isinstance(data, dict) else None
        return activity_id if isinstance(activity_id, str) else None

    def mark_accepted(self, run_id: str, index: int, activity_id: str) -> None:
        path = self._staging(run_id) / accepted_name(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, orjson.dumps({"activity_id": activity_id}))

    def forget_accepted(self, run_id: str, index: int) -> None:
        (self._staging(run_id) / accepted_name(index)).unlink(missing_ok=True)

    def clear_staging(self, run_id: str) -> None:
        shutil.rmtree(self._staging(run_id), ignore_errors=True)

    def publish_rejects(self, run_id: str) -> str | None:
        staged = self._staging(run_id) / REJECTS_FILE
        target = self._run(run_id) / REJECTS_FILE
        if staged.exists():
            os.replace(staged, target)
        return str(target) if target.exists() else None

    def read_rejects(self, run_id: str) -> Iterator[bytes] | None:
        try:
            stream = (self._run(run_id) / REJECTS_FILE).open("rb")
        except FileNotFoundError:
            return None
        return _pieces(stream)

    def write_report(self, run_id: str, report: Mapping[str, Any]) -> str:
        path = self._run(run_id) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, _json(report))
        return str(path)

    def read_report(self, run_id: str) -> dict[str, Any] | None:
        try:
            data = orjson.loads((self._run(run_id) / REPORT_FILE).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def report_location(self, run_id: str) -> str:
        return str(self._run(run_id) / REPORT_FILE)

    def list_reports(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{REPORT_FILE}"))


# --- Blob Storage ---------------------------------------------------------------------
# The Azure SDK is imported in the methods that use it, not above: a local run store
# (prepare on local files) stays about 40 MB lighter without it.


class BlobRunStore:
    """Runs in two private containers: ``staging`` and ``reports``."""

    def __init__(
        self,
        service: BlobServiceClient,
        *,
        staging: str = STAGING_CONTAINER,
        reports: str = REPORTS_CONTAINER,
    ) -> None:
        self.service = service
        self.staging = service.get_container_client(staging)
        self.reports = service.get_container_client(reports)
        self._ready: set[str] = set()

    def _container(self, client: ContainerClient) -> ContainerClient:
        """The container, created the first time it is needed (Azurite starts empty)."""
        from azure.core.exceptions import ResourceExistsError  # noqa: PLC0415 - blob only

        if client.container_name not in self._ready:
            with contextlib.suppress(ResourceExistsError):
                client.create_container()
            self._ready.add(client.container_name)
        return client

    @staticmethod
    def _name(run_id: str, name: str) -> str:
        return f"{check_run_id(run_id)}/{name}"

    def _read_json(self, client: ContainerClient, name: str) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        try:
            raw = client.download_blob(name).readall()
        except ResourceNotFoundError:
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def _put_json(self, client: ContainerClient, name: str, data: Mapping[str, Any]) -> None:
        from azure.storage.blob import ContentSettings  # noqa: PLC0415 - blob only

        self._container(client).upload_blob(
            name,
            _json(data),
            overwrite=True,
            content_settings=ContentSettings(content_type="application/json"),
        )

    def describe(self) -> str:
        return f"az://{self.staging.container_name} and az://{self.reports.container_name}"

    def staging_output(self, run_id: str) -> PreparedOutput:
        return BlobOutput(self._container(self.staging), check_run_id(run_id))

    def staging_location(self, run_id: str) -> str:
        return f"az://{self.staging.container_name}/{check_run_id(run_id)}"

    def staged_summary(self, run_id: str) -> dict[str, Any] | None:
        return self._read_json(self.staging, self._name(run_id, SUMMARY_FILE))

    def read_chunk(self, run_id: str, name: str) -> bytes:
        return self.staging.download_blob(self._name(run_id, name), max_concurrency=2).readall()

    def delete_chunk(self, run_id: str, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        with contextlib.suppress(ResourceNotFoundError):
            self.staging.delete_blob(self._name(run_id, name))

    def read_staged(self, run_id: str, name: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        try:
            return self.staging.download_blob(self._name(run_id, name), max_concurrency=2).readall()
        except ResourceNotFoundError:
            return None

    def write_staged(self, run_id: str, name: str, data: bytes) -> None:
        self._container(self.staging).upload_blob(
            self._name(run_id, name), data, overwrite=True, max_concurrency=2
        )

    def accepted(self, run_id: str, index: int) -> str | None:
        data = self._read_json(self.staging, self._name(run_id, accepted_name(index)))
        activity_id = data.get("activity_id") if data else None
        return activity_id if isinstance(activity_id, str) else None

    def mark_accepted(self, run_id: str, index: int, activity_id: str) -> None:
        name = self._name(run_id, accepted_name(index))
        self._put_json(self.staging, name, {"activity_id": activity_id})

    def forget_accepted(self, run_id: str, index: int) -> None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        with contextlib.suppress(ResourceNotFoundError):
            self.staging.delete_blob(self._name(run_id, accepted_name(index)))

    def clear_staging(self, run_id: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        prefix = f"{check_run_id(run_id)}/"
        for blob in self.staging.list_blobs(name_starts_with=prefix):
            with contextlib.suppress(ResourceNotFoundError):
                self.staging.delete_blob(blob.name)

    def publish_rejects(self, run_id: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only
        from azure.storage.blob import ContentSettings  # noqa: PLC0415

        name = self._name(run_id, REJECTS_FILE)
        location = f"az://{self.reports.container_name}/{name}"
        target = self._container(self.reports).get_blob_client(name)
        try:
            download = self.staging.download_blob(name)
        except ResourceNotFoundError:
            return location if target.exists() else None
        target.upload_blob(
            download.chunks(),
            overwrite=True,
            content_settings=ContentSettings(content_type="text/csv; charset=utf-8"),
        )
        with contextlib.suppress(ResourceNotFoundError):
            self.staging.delete_blob(name)
        return location

    def read_rejects(self, run_id: str) -> Iterator[bytes] | None:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        try:
            download = self.reports.download_blob(self._name(run_id, REJECTS_FILE))
        except ResourceNotFoundError:
            return None
        return iter(download.chunks())

    def write_report(self, run_id: str, report: Mapping[str, Any]) -> str:
        name = self._name(run_id, REPORT_FILE)
        self._put_json(self.reports, name, report)
        return f"az://{self.reports.container_name}/{name}"

    def read_report(self, run_id: str) -> dict[str, Any] | None:
        return self._read_json(self.reports, self._name(run_id, REPORT_FILE))

    def report_location(self, run_id: str) -> str:
        return f"az://{self.reports.container_name}/{self._name(run_id, REPORT_FILE)}"

    def list_reports(self) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415 - blob only

        found: list[str] = []
        with contextlib.suppress(ResourceNotFoundError):
            for blob in self.reports.list_blobs():
                run_id, _, name = blob.name.partition("/")
                if name == REPORT_FILE:
                    found.append(run_id)
        return sorted(found)


# --- from settings --------------------------------------------------------------------


def state_store_for(runs: RunStore) -> StateStore:
    """The state store beside a run store: the same backend, the same account."""
    if isinstance(runs, BlobRunStore):
        return BlobStateStore(runs.reports)
    if isinstance(runs, LocalRunStore):
        return LocalStateStore(runs.root.parent / STATE_FOLDER)
    raise TypeError(f"no state store for {type(runs).__name__}")
