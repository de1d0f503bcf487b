"""``ccexport lists``: the lists of a connected account, and ``--create NAME``.

The same token handling as ``ccexport check`` (``connection_commands.account_client``):
a usable access token, refreshed when needed, requests paced under the API key's
budget. A table of names, ids and member counts, or ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from shared.config import Config, Settings
from shared.constant_contact.connections import DEFAULT_CONNECTION
from shared.constant_contact.models import ContactList
from shared.constant_contact.pacing import Pacer
from shared.exports.account import account_lists, list_document, new_list_name
from shared.wiring import clients
from shared.workstation.cli_help import add_connection_option, command_parser
from shared.workstation.commands import guarded
from shared.workstation.connection_commands import _logs, account_client

NAME_WIDTH = 48  # longer names are cut in the table (--json has them whole)

DESCRIPTION = """\
Show the lists of a connected Constant Contact account: each list's name, id and
number of members. A list's name works wherever ccexport takes a list id
(--list-id, an export definition's list_ids).

With --create NAME, create a list of that name, or show the one the account
already has (list names are unique in Constant Contact)."""

EXAMPLES = (
    ("the lists of the default connection", "ccexport lists"),
    ("the lists of another connection, as JSON", "ccexport lists --connection acme --json"),
    ("create a list (or find the one of that name)", "ccexport lists --create 'Newsletter NL'"),
)

NOTES = """\
exit status: 0 (also when --create finds the list already there); 2 for a name that
cannot be a list's; 1 when the connection must be made again or Constant Contact
fails (one line on stderr says why)"""


def parser() -> argparse.ArgumentParser:
    made = command_parser("lists", DESCRIPTION, EXAMPLES, notes=NOTES)
    made.add_argument(
        "--create",
        metavar="NAME",
        help="create a list of this name, or show the existing list of that name "
        "(default: only show the lists)",
    )
    add_connection_option(made, default=DEFAULT_CONNECTION, help="the connected account to look at")
    made.add_argument(
        "--json",
        action="store_true",
        help="print the lists (or the list) as JSON on stdout (default: a table)",
    )
    return made


async def show_lists(
    settings: Settings, connection: str, pacer: Pacer | None = None
) -> list[ContactList]:
    async with account_client(settings, connection, pacer) as (_manager, client):
        return await account_lists(client)


async def create_list(
    settings: Settings, connection: str, name: str, pacer: Pacer | None = None
) -> tuple[ContactList, bool]:
    async with account_client(settings, connection, pacer) as (_manager, client):
        return await client.create_or_find_list(name)


def _members(lst: ContactList) -> str:
    return "-" if lst.membership_count is None else f"{lst.membership_count:,}"


def _cut(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def table(lists: Sequence[ContactList]) -> list[str]:
    """The lists as aligned lines: name, id, members."""
    width = min(max([len("name"), *(len(lst.name) for lst in lists)]), NAME_WIDTH)
    counts = [_members(lst) for lst in lists]
    count_width = max([len("members"), *(len(c) for c in counts)])
    lines = [f"{'name':<{width}}  {'id':<36}  {'members':>{count_width}}"]
    for lst, count in zip(lists, counts, strict=True):
        lines.append(f"{_cut(lst.name, width):<{width}}  {lst.list_id:<36}  {count:>{count_width}}")
    return lines


@guarded
def run(args: argparse.Namespace) -> int:
    _logs(os.environ)
    config = Config.from_mapping(os.environ)
    settings, pacer = config.ctct, clients.run_pacer(config)
    connection: str = args.connection
    if args.create is not None:
        lst, created = asyncio.run(
            create_list(settings, connection, new_list_name(args.create), pacer)
        )
        if args.json:
            doc: dict[str, Any] = {
                "connection": connection,
                "created": created,
                "list": list_document(lst),
            }
            sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        elif created:
            print(f"created list {lst.name!r}: {lst.list_id}")
        else:
            print(
                f"list {lst.name!r} already exists: {lst.list_id} ({_members(lst)} members); "
                "nothing was created"
            )
        return 0
    lists = asyncio.run(show_lists(settings, connection, pacer))
    if args.json:
        doc = {"connection": connection, "lists": [list_document(lst) for lst in lists]}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if lists:
        print("\n".join(table(lists)))
    count = f"{len(lists)} list{'' if len(lists) == 1 else 's'}"
    print(f"{count} in the account of connection {connection!r}")
    return 0


def main(argv: Sequence[str]) -> int:
    return run(parser().parse_args(list(argv)))
