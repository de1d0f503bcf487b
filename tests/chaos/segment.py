"""A Customer Insights segment with every kind of row, and what must come of it.

The generator decides each row's fate as it writes it, so the expected list is known
from the input itself, not from the code under test: valid people (some written in
upper case and with spaces), broken and non-ASCII addresses, repeats of earlier
people, rows with a field too many, names that are spreadsheet formulas, and quoted
values with line breaks in them (one record over two physical lines).
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

import orjson

EXPORT = "ChaosExport"
TABLE = "ChaosSegment"
STAMP = "2026/11/28/0930"
COLUMNS = ("CustomerId", "PrimaryEmail", "FirstName", "LastName", "City")
MAPPING = {"email": "PrimaryEmail", "first_name": "FirstName", "last_name": "LastName",
           "city": "City"}  # fmt: skip
FORMULAS = ('=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)")


@dataclass(frozen=True)
class Segment:
    root: Path
    """The folder holding ``<EXPORT>/model.json`` and the run folder below it."""
    rows: int
    """Records a strict CSV reader sees (a quoted line break does not make a row)."""
    expected: tuple[str, ...]
    """Normalised addresses that must end in the list, each once."""
    rejected: int
    duplicates: int
    emails: tuple[str, ...]
    """Every address-like string written, valid or not (for log scans)."""

    @property
    def run_folder(self) -> Path:
        return self.root / EXPORT / TABLE / STAMP

    @property
    def relative_run(self) -> str:
        return f"{EXPORT}/{TABLE}/{STAMP}"


def write_segment(root: Path, rows: int, seed: int, *, tag: str = "chaos") -> Segment:
    """Write ``rows`` records in two headerless parts and a model.json under ``root``."""
    rng = random.Random(seed)
    records: list[list[str]] = []
    valid: list[str] = []
    emails: list[str] = []
    rejected = duplicates = 0
    for n in range(1, rows + 1):
        email = f"p{n}.{tag}{seed}@chaos{n % 13}.example.com"
        first, last, city = rng.choice(("Ana", "Zoë", "Björn", "Wei")), f"L{n}", "Kraków"
        roll = rng.random()
        extra: list[str] = []
        if roll < 0.03:
            email = f"no-at-sign-{n}.{tag}"
            rejected += 1
        elif roll < 0.05:
            email = f"zoë{n}.{tag}@exämple.com"
            rejected += 1
        elif roll < 0.08 and valid:
            email = f"  {rng.choice(valid).upper()} "
            duplicates += 1
        elif roll < 0.09:
            extra = ["a field too many"]
            rejected += 1
        else:
            if roll < 0.11:
                first = rng.choice(FORMULAS)
            elif roll < 0.12:
                city = "Flat 2\nKraków"  # a quoted line break: still one record
            elif roll < 0.14:
                email = email.upper()
            valid.append(email.strip().lower())
        emails.append(email.strip())
        records.append([f"id-{seed}-{n}", email, first, last, city, *extra])
    folder = root / EXPORT / TABLE / STAMP
    folder.mkdir(parents=True, exist_ok=True)
    half = (len(records) + 1) // 2
    for part, chunk in enumerate((records[:half], records[half:]), start=1):
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerows(chunk)
        (folder / f"{TABLE}_{part}.csv").write_bytes(text.getvalue().encode("utf-8"))
    (root / EXPORT / "model.json").write_bytes(model_json(COLUMNS, 2))
    return Segment(root, rows, tuple(valid), rejected, duplicates, tuple(emails))


def model_json(columns: tuple[str, ...], parts: int) -> bytes:
    base = f"https://example.blob.core.windows.net/ci/{EXPORT}/{TABLE}/{STAMP}"
    return orjson.dumps(
        {
            "name": EXPORT,
            "version": "1.0",
            "entities": [
                {
                    "$type": "LocalEntity",
                    "name": TABLE,
                    "attributes": [{"name": c, "dataType": "string"} for c in columns],
                    "partitions": [
                        {"name": f"{TABLE}_{i}", "location": f"{base}/{TABLE}_{i}.csv"}
                        for i in range(1, parts + 1)
                    ],
                }
            ],
        }
    )


def upload(segment: Segment, blob_connection: str, container: str, prefix: str) -> str:
    """Copy the segment into a container under ``prefix``; returns the run folder as az://."""
    from azure.storage.blob import BlobServiceClient  # noqa: PLC0415 - only blob tests need it

    service = BlobServiceClient.from_connection_string(blob_connection)
    client = service.get_container_client(container)
    if not client.exists():
        client.create_container()
    for path in sorted((segment.root / EXPORT).rglob("*")):
        if path.is_file():
            name = f"{prefix}/{path.relative_to(segment.root).as_posix()}"
            client.upload_blob(name, path.read_bytes(), overwrite=True)
    return f"az://{container}/{prefix}/{segment.relative_run}"
