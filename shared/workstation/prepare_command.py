"""`ccexport prepare`: map, validate and chunk a segment export without sending anything.

It compares the segment with the export's last snapshot, as a run would (the export
is named by ``--config`` with a ``name``, or by its list ids and the segment's
Customer Insights names), and shows what a run would send: added, updated and
unchanged contacts, and in mirror mode the members it would remove. The state is only
read here, never written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from shared.config import Config
from shared.errors import InputError
from shared.exports import definitions as exports
from shared.prepare.chunks import DEFAULT_MAX_BODY_BYTES
from shared.prepare.outputs import BlobOutput, LocalOutput, PreparedOutput
from shared.prepare.pipeline import MAX_WORKERS, prepare
from shared.prepare.summary import PrepareSummary
from shared.runs.next_state import baseline, changes_json
from shared.runs.report import counts_text, render_changes
from shared.runs.store import state_store_for
from shared.segments import layout as segments
from shared.storage import files
from shared.wiring import stores
from shared.workstation.cli_help import command_parser
from shared.workstation.commands import export_from_args, guarded


def _output(target: str, blob_service: Any) -> PreparedOutput:
    if target.startswith(files.BLOB_SCHEME):
        container, _, prefix = target[len(files.BLOB_SCHEME) :].partition("/")
        if blob_service is None:
            raise InputError(f"{target} is in Blob Storage but no storage connection is set")
        client = blob_service.get_container_client(container)
        if not client.exists():
            client.create_container()
        return BlobOutput(client, prefix)
    return LocalOutput(Path(target))


@guarded
def _prepare(args: argparse.Namespace) -> int:
    export = export_from_args(args).with_overrides(mode=args.mode)
    config = Config.from_mapping(os.environ)
    service = stores.blob_service(config)
    store, name = files.resolve(args.source, service)
    segment = segments.locate(store, name, encoding=export.encoding)
    states = state_store_for(stores.run_store(config, service))
    base = baseline(states, export, segment, full=args.full)
    tracker = base.tracker()
    result = prepare(
        segment,
        export,
        _output(args.out, service),
        max_body_bytes=args.max_body_bytes,
        workers=args.workers,
        changes=tracker,
        describe_changes=lambda counts: changes_json(base, counts, tracker.keys),
    )
    if args.json:
        sys.stdout.write(orjson.dumps(result.summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_summary(result.prepared, result.location)
    return 0


def _print_summary(s: PrepareSummary, location: str) -> None:
    truncated = s.read.truncated if s.read else {}
    invalid = s.read.invalid_values if s.read else {}
    largest = s.read.largest_chunk_bytes if s.read else 0
    print(f"prepared {s.source}")
    print(f"  rows read   {s.rows_read:>10,}")
    print(f"  contacts    {s.contacts:>10,}")
    print(f"  duplicates  {s.duplicates:>10,}")
    reasons = counts_text(s.reject_reasons)
    print(f"  rejected    {s.rejected:>10,}" + (f"  ({reasons})" if reasons else ""))
    if truncated:
        print(
            f"  truncated   {sum(truncated.values()):>10,}  values cut to their field's "
            f"length, still sent ({counts_text(truncated)})"
        )
    if invalid:
        print(
            f"  invalid     {sum(invalid.values()):>10,}  values left out, "
            f"not a valid date ({counts_text(invalid)})"
        )
    print(
        f"  chunks      {s.chunks:>10,}  (fewest possible {s.fewest_chunks_possible}, "
        f"largest {largest:,} bytes)"
    )
    changes = s.changes
    if changes:
        print(
            f"  compared with {changes['previous_contacts']:,} contacts of the last run"
            if changes["previous_contacts"]
            else "  no earlier run of this export: all are new"
        )
        for line in render_changes(changes, None):
            print(line)
        print(f"  would send  {changes['sent']:>10,}")
    for name, when in (s.list_names or {}).items():
        print(f"  list        {name!r}: a list name, {when}")
    print(f"  output      {location}")


DESCRIPTION = """\
Check a segment export and show what `ccexport run` would send, sending nothing
(a dry run).

It reads the export, maps its columns to contact fields, checks every email
address, sets aside duplicates and the rows it cannot use (each with its reason,
in DIR/rejects.csv), and writes the import requests a run would send to
DIR/chunks and a summary to DIR/summary.json. Compared with the export's last run,
it shows which contacts are new, changed or unchanged. Nothing reaches Constant
Contact, and the export's saved state is only read."""

EXAMPLES = (
    (
        "preview the newest export of a segment with its export definition",
        "ccexport prepare ./exports/HighValue --config high-value.json --out ./preview",
    ),
    (
        "a single CSV file, its columns mapped here",
        "ccexport prepare contacts.csv --list-id 3fa85f64-5717-4562-b3fc-2c963f66afa6 \\\n"
        "    --map email=PrimaryEmail --map first_name=FirstName --out ./preview",
    ),
)

NOTES = """\
exit status: 0 when prepared; 2 for input to fix (one line on stderr says what;
nothing is written)"""


def parser() -> argparse.ArgumentParser:
    parser = command_parser("prepare", DESCRIPTION, EXAMPLES, notes=NOTES)
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a CSV file (.csv or .csv.gz), a Customer Insights run or segment folder, "
        "or the same in Blob Storage as az://CONTAINER/PATH",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="where to write chunks, rejects.csv and summary.json: a folder or "
        "az://CONTAINER/PREFIX (required)",
    )
    parser.add_argument(
        "--config",
        metavar="EXPORT.json",
        help="an export definition: its lists, column mapping and limits "
        "(the options below override it)",
    )
    parser.add_argument(
        "--list-id",
        action="append",
        metavar="UUID|NAME",
        help="a Constant Contact list to send to: its id, or its name (resolved at run time; "
        "prepare looks nothing up) (repeatable; default: the export definition's)",
    )
    parser.add_argument(
        "--map",
        action="append",
        metavar="FIELD=COLUMN",
        help="map a column to a contact field, e.g. email=PrimaryEmail (repeatable; "
        "default: the export definition's mapping)",
    )
    parser.add_argument(
        "--max-profiles",
        type=int,
        metavar="N",
        help="refuse an export with more rows than this (default: the export "
        f"definition's, else {exports.DEFAULT_MAX_PROFILES:,})",
    )
    parser.add_argument(
        "--mode",
        choices=exports.MODES,
        help="mirror: also show the members a mirror run would remove from the lists "
        "(default: the export definition's, else add)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="pack every contact, as `ccexport run --full` sends them, not only the new "
        "and changed ones",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="workers that read and check rows in parallel (default: one per core, "
        f"at most {MAX_WORKERS})",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help=argparse.SUPPRESS
    )
    return parser


def main(argv: Sequence[str]) -> int:
    return _prepare(parser().parse_args(list(argv)))
