"""``ccexport usage``: the API key's requests today, against its daily quota.

Every ccexport process that sends with the key counts its requests in the pacer's
record (a blob with a storage connection, else a file under CCEXPORT_HOME); this
reads that count. Another application using the same key is not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import orjson

from shared.config import Config
from shared.workstation.cli_help import command_parser
from shared.workstation.commands import guarded

DESCRIPTION = """\
Show how many requests the Constant Contact API key (CTCT_CLIENT_ID) has made today
(UTC), of its daily quota, and when the quota starts again. Every ccexport process
that sends with the key counts into one record: in the storage account when
CCEXPORT_STORAGE is set (so the function app's runs count too), else under
CCEXPORT_HOME. Requests made by other applications with the same key are not
counted."""

EXAMPLES = (
    ("today's use of the key", "ccexport usage"),
    ("the same as JSON", "ccexport usage --json"),
)

NOTES = """\
settings: CTCT_CLIENT_ID (the key), CTCT_DAILY_QUOTA (default 10000), CCEXPORT_STORAGE
exit status: 0; 1 when the record cannot be read (one line on stderr says why)"""


def parser() -> argparse.ArgumentParser:
    made = command_parser("usage", DESCRIPTION, EXAMPLES, notes=NOTES)
    made.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    return made


def main(argv: Sequence[str]) -> int:
    return guarded(_usage)(parser().parse_args(argv))


def _usage(args: argparse.Namespace) -> int:
    from shared.wiring import clients  # noqa: PLC0415 - the Blob SDK only when it runs

    config = Config.from_mapping(os.environ)
    config.ctct.require_client_id()
    usage = clients.key_usage(config)
    limit = config.ctct.daily_quota
    if args.json:
        sys.stdout.write(orjson.dumps(usage.to_json(limit)).decode() + "\n")
        return 0
    left = usage.left(limit)
    print(
        f"API key {usage.key}, {usage.day} (UTC): {usage.used:,} of {limit:,} requests used, "
        f"{left:,} left"
    )
    if usage.stopped_until:
        until = usage.stopped_until
        print(f"sending stopped (Constant Contact answered quota_exceeded) until {until}")
    print(f"the quota starts again at {usage.resets_at}")
    print(f"counted in {clients.pacing_place(config)}")
    return 0
