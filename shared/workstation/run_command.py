"""``ccexport run``: one export run end to end on this machine, with a progress bar.

The same orchestrator and activities as the function app, on the local Durable Task
engine (shared/workstation/local_run.py), against local files or blobs and against Constant
Contact or the sandbox, whichever the settings name. Before anything is prepared it
checks that the connection has a usable token, that the lists exist (list names are
resolved to ids here, once; the run carries the ids) and that the mapped custom fields
exist (``--create-fields`` creates the missing ones), so a typo costs a request or two
instead of a whole run.

Runs are incremental: only contacts new or changed since the export's last successful
run are sent (``--full`` sends all). ``--mode mirror`` also removes from the lists the
members this export added that left the segment; a run that would remove more than
``--max-removal-share`` of a list stops and asks: run it again with
``--run-id ID --confirm-removals`` to go ahead.

Exit status: 0 when every contact was delivered; 3 when some were not (the report
says which, and where their request bodies are kept); 4 when a mirror run stopped to
ask for confirmation (nothing was sent); 1 when the run failed; 2 for input to fix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from shared.config import Config
from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.connections import DEFAULT_CONNECTION, check_connection
from shared.constant_contact.tokens import read_status
from shared.errors import ReauthorizationRequired
from shared.exports.account import preflight as account_preflight
from shared.exports.definitions import (
    DEFAULT_MAX_PROFILES,
    DEFAULT_MAX_REMOVAL_SHARE,
    MODES,
    ExportDefinition,
)
from shared.prepare.chunks import DEFAULT_MAX_BODY_BYTES
from shared.runs.activities import RunActivities, RunServices
from shared.runs.contract import RunInput, RunOptions, RunStatus
from shared.runs.ids import check_run_id, new_run_id
from shared.runs.report import render
from shared.secrets.opening import open_secret_store
from shared.telemetry.spans import step_span
from shared.wiring import clients
from shared.workstation.cli_help import EXIT_FAILED, add_connection_option, command_parser
from shared.workstation.commands import export_from_args, guarded
from shared.workstation.local_run import run_locally
from shared.workstation.progress import ProgressBar

EXIT_NOT_DELIVERED = 3
EXIT_NEEDS_CONFIRMATION = 4
LOCAL_EXPORT_NAME = "local"


DESCRIPTION = """\
Put the people of a segment export into Constant Contact lists, then report what
happened to every row.

It checks the connection, the lists (by id or name) and the mapped custom fields
first, prepares the export (as `ccexport prepare` does), sends the new and changed
contacts in as few imports as possible, waits for Constant Contact to finish them
and prints a report. Runs on this machine, with the same steps as the deployed
app. Only contacts new or changed since the export's last run are sent; with --mode
mirror it also removes from the lists the members this export added who have left
the segment."""

EXAMPLES = (
    (
        "send the newest export of a segment to the lists of its export definition",
        "ccexport run az://inbox/HighValue --config high-value.json",
    ),
    (
        "a CSV file to one list, with a connection other than the default",
        "ccexport run contacts.csv --list-id 3fa85f64-5717-4562-b3fc-2c963f66afa6 \\\n"
        "    --map email=PrimaryEmail --connection acme",
    ),
    (
        "resend what a run could not deliver (after the daily quota reset)",
        "ccexport run az://inbox/HighValue --config high-value.json --run-id RUN_ID",
    ),
)

NOTES = """\
exit status: 0 when every contact was delivered; 3 when some were not (the report
says which, and where their requests are kept); 4 when a mirror run stopped to ask
for confirmation (nothing was sent); 1 when the run failed; 2 for input to fix"""


def parser() -> argparse.ArgumentParser:
    parser = command_parser("run", DESCRIPTION, EXAMPLES, notes=NOTES)
    add = parser.add_argument
    add(
        "source",
        metavar="SOURCE",
        help="a CSV file (.csv or .csv.gz), a Customer Insights run or segment folder, "
        "or the same in Blob Storage as az://CONTAINER/PATH",
    )
    add(
        "--config",
        metavar="EXPORT.json",
        help="an export definition: its lists, column mapping, mode and limits "
        "(the options below override it)",
    )
    add(
        "--list-id",
        action="append",
        metavar="UUID|NAME",
        help="a Constant Contact list to send to: its id or its name (repeatable; "
        "default: the export definition's)",
    )
    add(
        "--map",
        action="append",
        metavar="FIELD=COLUMN",
        help="map a column to a contact field, e.g. email=PrimaryEmail (repeatable; "
        "default: the export definition's mapping)",
    )
    add_connection_option(
        parser,
        default=DEFAULT_CONNECTION,
        help="the connected account to send to",
        default_text=f"the export definition's connection, else '{DEFAULT_CONNECTION}'",
    )
    add(
        "--max-profiles",
        type=int,
        metavar="N",
        help="refuse an export with more rows than this (default: the export "
        f"definition's, else {DEFAULT_MAX_PROFILES:,})",
    )
    add(
        "--run-id",
        metavar="ID",
        help="resume this run (after the daily quota reset, or to resend what failed): "
        "what it already delivered is not sent again (default: a new run)",
    )
    add(
        "--mode",
        choices=MODES,
        help="add: add and update members; mirror: also remove the members this export "
        "added who left the segment (default: the export definition's, else add)",
    )
    add(
        "--max-removal-share",
        type=float,
        metavar="SHARE",
        help="mirror mode: stop before removing more than this share of a list "
        f"(default: the export definition's, else {DEFAULT_MAX_REMOVAL_SHARE:g}, "
        f"i.e. {DEFAULT_MAX_REMOVAL_SHARE * 100:g}%%)",
    )
    add(
        "--confirm-removals",
        action="store_true",
        help="mirror mode: go ahead with removals past --max-removal-share",
    )
    add(
        "--full",
        action="store_true",
        help="send every contact, not only those new or changed since the last run",
    )
    add(
        "--create-fields",
        action="store_true",
        help="create the mapped custom fields (cf:NAME) the account lacks, as text fields, "
        "before anything is sent (default: the export definition's create_custom_fields, "
        "else stop with an error naming them)",
    )
    add("--json", action="store_true", help="print the report as JSON on stdout")
    add(
        "--poll-seconds",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds before the first check of the imports' progress; the checks then "
        "space out, up to --max-poll-seconds",
    )
    add(
        "--max-poll-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="the longest gap between two checks (default 30: someone is watching; the "
        "function app's runs go up to 300 to spare the daily request quota)",
    )
    add(
        "--timeout",
        type=float,
        metavar="S",
        help="give up waiting for the run after S seconds (default: "
        f"{(RunOptions.max_wait_seconds + 3600 + QUOTA_WAIT_SECONDS) / 3600:g} hours: a day "
        "for the API key's quota to turn, the longest a run waits for its imports, and one)",
    )
    add("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help=argparse.SUPPRESS)
    return parser


async def preflight(
    services: RunServices, connection: str, export: ExportDefinition, *, create_fields: bool
) -> ExportDefinition:
    """A usable token, existing lists and custom fields, or a one-line error before any
    work; returns the export with its lists as ids (names resolved here, once)."""
    settings = services.settings
    store = open_secret_store(settings.store_settings)  # its own: this loop ends here
    try:
        marked = await read_status(store, connection)
        if marked is not None:
            raise ReauthorizationRequired(connection, marked)
        connections = await clients.connections(settings, store, services.locks)()
        manager = connections.tokens(connection)
        async with ConstantContactClient(
            settings.api_base, manager.access_token, services.pacer, retry=services.retry
        ) as client:
            return await account_preflight(
                client, export, connection=connection, create_fields=create_fields, always=True
            )
    finally:
        await store.close()


QUOTA_WAIT_SECONDS = 86_400
"""The longest a run may wait for its API key's day to turn before it sends."""


@guarded
def run(args: argparse.Namespace) -> int:
    export = export_from_args(args).with_overrides(
        mode=args.mode, max_removal_share=args.max_removal_share
    )
    now = datetime.now(UTC)
    run_id = (
        check_run_id(args.run_id)
        if args.run_id
        else new_run_id(export.name or LOCAL_EXPORT_NAME, now)
    )
    options = RunOptions(
        max_body_bytes=args.max_body_bytes,
        poll_seconds=args.poll_seconds,
        max_poll_seconds=max(args.max_poll_seconds, args.poll_seconds),
        full=args.full,
        confirm_removals=args.confirm_removals,
    )
    connection = check_connection(args.connection or export.connection or DEFAULT_CONNECTION)
    # The command is the run's trigger: its span is the root of the run's one trace
    # (the list check, the start, every step and request: shared/telemetry/).
    with step_span("run", run_id, trigger="cli", connection=connection):
        services = clients.run_services(Config.from_mapping(os.environ))
        export = asyncio.run(
            preflight(services, connection, export, create_fields=args.create_fields)
        )
        run_input = RunInput.create(
            run_id,
            export,
            args.source,
            connection=connection,
            trigger="cli",
            requested_at=now,
            options=options,
        )
        bar = ProgressBar(sys.stderr, enabled=sys.stderr.isatty())
        if bar.enabled:
            print(f"run {run_id}", file=sys.stderr)
        activities = RunActivities(services, on_rows=bar.rows)
        timeout = args.timeout or options.max_wait_seconds + 3600 + QUOTA_WAIT_SECONDS
        try:
            result = run_locally(run_input, activities, timeout=timeout, on_progress=bar.status)
        finally:
            bar.close()
    report = result.report
    if args.json:
        document = report if report is not None else result.outcome.to_json()
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif report is not None:
        print(render(report))
        if result.outcome.report:
            print(f"  report          {result.outcome.report}")
    else:
        status_text = result.outcome.status.value.replace("_", " ")
        print(f"run {result.outcome.run_id}: {status_text} (no report was written)")
    status = result.outcome.status
    if status is RunStatus.COMPLETED:
        return 0
    if status is RunStatus.NEEDS_CONFIRMATION:
        return EXIT_NEEDS_CONFIRMATION
    return EXIT_FAILED if status is RunStatus.FAILED else EXIT_NOT_DELIVERED


def main(argv: Sequence[str]) -> int:
    return run(parser().parse_args(list(argv)))
