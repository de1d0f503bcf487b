"""Write a Customer Insights-style segment export for demos, tests and benchmarks.

    <out>/BlobExport/model.json
    <out>/BlobExport/HighValueSegment/2026/11/28/0930/HighValueSegment_1.csv ... _N.csv
    <out>/export.json   (an export definition mapping its columns)

The CSV parts have no header row, as the CDM default says; model.json names the
columns. Rows are about 120 bytes, 8 columns, with non-ASCII names. A given seed always
writes the same bytes, and the counts of bad rows and duplicates are exact.
"""

from __future__ import annotations

import argparse
import csv
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

COLUMNS = (
    "CustomerId",
    "PrimaryEmail",
    "FirstName",
    "LastName",
    "City",
    "PostalCode",
    "PrimaryPhone",
    "Tier",
)
EXPORT = "BlobExport"
TABLE = "HighValueSegment"
RUN = "2026/11/28/0930"
LIST_ID = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
_FIRST = ("José", "Zoë", "Anaïs", "Björn", "Mary", "Wei", "Olu", "Priya", "Liam", "Sofía")
_LAST = ("García", "Müller", "O'Brien", "Smith", "Nguyen", "Kowalski", "Okafor", "Rossi")
_CITY = ("Seattle", "Zürich", "São Paulo", "Lagos", "Kraków", "Toronto", "Pune", "Dublin")
_TIER = ("gold", "silver", "bronze")


@dataclass(frozen=True)
class SampleCounts:
    rows: int
    bad: int
    duplicates: int

    @property
    def contacts(self) -> int:
        return self.rows - self.bad - self.duplicates


def write_sample(
    out: Path,
    rows: int,
    *,
    parts: int = 2,
    bad_every: int = 0,
    duplicate_every: int = 0,
    seed: int = 7,
    header: bool = False,
    quote_all: bool = False,
    line_break_every: int = 0,
) -> SampleCounts:
    """Write the export; every bad_every-th row has a broken email and every
    duplicate_every-th row repeats an earlier row's address (in other letter case).
    ``quote_all`` quotes every field, as the CDM default (QuoteAlways) does; every
    line_break_every-th row has a line break inside its (quoted) city."""
    rng = random.Random(seed)
    run_dir = out / EXPORT / TABLE / RUN
    run_dir.mkdir(parents=True, exist_ok=True)
    bad = duplicates = 0
    per_part = -(-rows // parts) if rows else 0
    written = 0
    for part in range(1, parts + 1):
        path = run_dir / f"{TABLE}_{part}.csv"
        with path.open("w", encoding="utf-8", newline="") as fh:
            if quote_all:
                writer = csv.writer(fh, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
            else:
                writer = csv.writer(fh, lineterminator="\r\n")
            if header:
                writer.writerow(COLUMNS)
            for _ in range(min(per_part, rows - written)):
                written += 1
                first, last = rng.choice(_FIRST), rng.choice(_LAST)
                email = _email(written)
                if bad_every and written % bad_every == 0:
                    email = f"not-an-email-{written}"
                    bad += 1
                elif duplicate_every and written % duplicate_every == 0 and written > 1:
                    earlier = written - 1
                    while (
                        bad_every and earlier % bad_every == 0
                    ) or earlier % duplicate_every == 0:
                        earlier -= 1
                    email = f"  {_email(earlier).upper()} "  # same address, other case, spaces
                    duplicates += 1
                city = rng.choice(_CITY)
                if line_break_every and written % line_break_every == 0:
                    city += "\r\nDowntown"
                writer.writerow(
                    (
                        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        email,
                        first,
                        last,
                        city,
                        f"{rng.randrange(10000, 99999)}",
                        f"+1-206-555-{rng.randrange(1000, 9999)}",
                        rng.choice(_TIER),
                    )
                )
    _write_model(out, parts, header)
    definition = {
        "name": "high-value",
        "list_ids": [LIST_ID],
        "mapping": {
            "email": "PrimaryEmail",
            "first_name": "FirstName",
            "last_name": "LastName",
            "city": "City",
            "zip": "PostalCode",
            "phone": "PrimaryPhone",
            "cf:tier": "Tier",
        },
    }
    (out / "export.json").write_bytes(orjson.dumps(definition, option=orjson.OPT_INDENT_2))
    return SampleCounts(rows, bad, duplicates)


def _email(row: int) -> str:
    return f"user.{row}@example{row % 97}.com"


def _write_model(out: Path, parts: int, header: bool) -> None:
    base = f"https://example.blob.core.windows.net/ci/{EXPORT}/{TABLE}/{RUN}"
    model = {
        "name": EXPORT,
        "version": "1.0",
        "entities": [
            {
                "$type": "LocalEntity",
                "name": TABLE,
                "attributes": [{"name": c, "dataType": "string"} for c in COLUMNS],
                "partitions": [
                    {
                        "name": f"{TABLE}_{i}",
                        "location": f"{base}/{TABLE}_{i}.csv",
                        "fileFormatSettings": {
                            "$type": "CsvFormatSettings",
                            "columnHeaders": header,
                            "delimiter": ",",
                            "quoteStyle": "QuoteStyle.Csv",
                            "csvStyle": "CsvStyle.QuoteAlways",
                        },
                    }
                    for i in range(1, parts + 1)
                ],
            }
        ],
    }
    (out / EXPORT / "model.json").write_bytes(orjson.dumps(model, option=orjson.OPT_INDENT_2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bad-every", type=int, default=997)
    parser.add_argument("--duplicate-every", type=int, default=1009)
    args = parser.parse_args()
    counts = write_sample(
        args.out,
        args.rows,
        parts=args.parts,
        bad_every=args.bad_every,
        duplicate_every=args.duplicate_every,
    )
    print(
        f"wrote {counts.rows:,} rows ({counts.bad} bad, {counts.duplicates} duplicates) "
        f"under {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
