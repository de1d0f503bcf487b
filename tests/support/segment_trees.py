"""Write the same tree of segment files to a local folder or to a blob container.

Tests describe an input once, as {relative name: bytes}, and run against both places
prepare reads from.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from azure.storage.blob import BlobServiceClient

from shared.storage import files

Tree = Mapping[str, bytes]
RUN = "ci/BlobExport/Seg/2026/11/28/0930"


def csv_bytes(rows: Iterable[Sequence[str]], *, newline: str = "\r\n") -> bytes:
    """Rows as CSV, quoting only where needed (as Customer Insights' CsvStyle allows)."""
    out = []
    for row in rows:
        cells = [
            '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\r\n') else cell
            for cell in row
        ]
        out.append(",".join(cells) + newline)
    return "".join(out).encode()


def model_json(
    columns: Sequence[str],
    *,
    entity: str = "Seg",
    header: bool | None = None,
    extra_entities: Sequence[str] = (),
    parts: int = 1,
) -> bytes:
    settings: dict[str, Any] = {"$type": "CsvFormatSettings", "delimiter": ","}
    if header is not None:
        settings["columnHeaders"] = header
    entities = [
        {
            "$type": "LocalEntity",
            "name": name,
            "attributes": [{"name": c, "dataType": "string"} for c in columns],
            "partitions": [
                {
                    "name": f"{name}_{i}",
                    "location": f"https://x/{name}_{i}.csv",
                    "fileFormatSettings": settings,
                }
                for i in range(1, parts + 1)
            ],
        }
        for name in (entity, *extra_entities)
    ]
    return orjson.dumps({"name": "BlobExport", "version": "1.0", "entities": entities})


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


class Place:
    """Where a test's tree lives: 'local' (a tmp folder) or 'blob' (an Azurite container)."""

    def __init__(self, kind: str, tmp: Path, blob_service: BlobServiceClient | None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.blob_service = blob_service
        self.container = f"t{uuid.uuid4().hex[:20]}"

    def write(self, tree: Tree) -> None:
        if self.kind == "local":
            for name, data in tree.items():
                path = self.tmp / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            return
        assert self.blob_service is not None
        container = self.blob_service.get_container_client(self.container)
        if not container.exists():
            container.create_container()
        for name, data in tree.items():
            container.upload_blob(name, data, overwrite=True)

    def source(self, name: str) -> str:
        """SOURCE for a name in the tree, as a user would type it."""
        if self.kind == "local":
            return str(self.tmp / name)
        return f"{files.BLOB_SCHEME}{self.container}/{name}"
