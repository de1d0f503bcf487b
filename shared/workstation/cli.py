"""The `ccexport` command line. Reads flags and the environment once, here at the edge.

A command is one entry of COMMANDS: its handler, its group in `ccexport --help` and a
one-line description. ``lazy(MODULE)`` imports the command's module only when that
command runs, so a short command (`check`, run 24 at a time) does not pay for loading
the Azure SDKs it never uses, and `ccexport --help` loads none of them. A command
module has ``main(argv) -> int`` and ``parser()``, built with
``shared.workstation.cli_help.command_parser`` so that every `ccexport COMMAND --help` looks the
same (tests/test_cli_help.py checks each command of the table).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from shared.workstation import logs, telemetry_file
from shared.workstation.cli_help import EXIT_INPUT, Example, examples_text, fail

Handler = Callable[[Sequence[str]], int]


@dataclass(frozen=True)
class LazyCommand:
    """A command whose module is imported only when it runs or its parser is asked for."""

    module: str
    main: str = "main"
    parser: str = "parser"

    def __call__(self, argv: Sequence[str]) -> int:
        code: int = getattr(importlib.import_module(self.module), self.main)(list(argv))
        return code

    def build_parser(self) -> argparse.ArgumentParser:
        build = getattr(importlib.import_module(self.module), self.parser)
        built: argparse.ArgumentParser = build()
        return built


def lazy(module: str, main: str = "main", parser: str = "parser") -> LazyCommand:
    """The handler of a command whose module has ``main(argv)`` and ``parser()``."""
    return LazyCommand(module, main, parser)


class Command(NamedTuple):
    handler: Handler
    group: str  # a key of GROUPS
    description: str  # one line for `ccexport --help`: 66 characters fit 80 columns


EVERYDAY = "everyday"
TOOLS = "tools"
GROUPS = {EVERYDAY: "everyday commands", TOOLS: "tools"}  # in the order of the help

COMMANDS: dict[str, Command] = {
    "prepare": Command(
        lazy("shared.workstation.prepare_command"),
        EVERYDAY,
        "a dry run: check a segment export and show what a run would send",
    ),
    "run": Command(
        lazy("shared.workstation.run_command"),
        EVERYDAY,
        "send a segment export to Constant Contact lists, then report on it",
    ),
    "lists": Command(
        lazy("shared.workstation.lists_command"),
        EVERYDAY,
        "show an account's lists (name, id, members), or create one",
    ),
    "connect": Command(
        lazy("shared.workstation.connection_commands", "connect_main", "connect_parser"),
        EVERYDAY,
        "sign in to a Constant Contact account once; its tokens are kept",
    ),
    "check": Command(
        lazy("shared.workstation.connection_commands", "check_main", "check_parser"),
        EVERYDAY,
        "check that a connection works and its lists and fields exist",
    ),
    "usage": Command(
        lazy("shared.workstation.usage_command"),
        EVERYDAY,
        "the API key's requests today, of its daily quota",
    ),
    "serve": Command(
        lazy("shared.workstation.serve.command"),
        EVERYDAY,
        "run the function app here: HTTP API, runs, timer and inbox",
    ),
    "sandbox": Command(
        lazy("sandbox.cli"),
        TOOLS,
        "a local stand-in for Constant Contact, to try ccexport safely",
    ),
}

ABOUT = (
    "ccexport puts the people of your Dynamics 365 Customer Insights segment exports "
    "into Constant Contact lists, and tells you what happened to each of them."
)
EXAMPLES: tuple[Example, ...] = (
    ("connect your Constant Contact account (once)", "ccexport connect"),
    (
        "send the newest export of a segment to the lists of its export definition",
        "ccexport run az://inbox/HighValue --config high-value.json",
    ),
)


def version() -> str:
    """This installation's version (pyproject.toml's, from the package metadata)."""
    from importlib import metadata  # noqa: PLC0415 - only --version needs it

    try:
        return metadata.version("ccexport")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: run `make install`)"


def usage() -> str:
    return "usage: ccexport COMMAND [OPTIONS ...]\n       ccexport [--help | --version]"


def main_help(width: int | None = None) -> str:
    """What `ccexport --help` prints: what ccexport is, its commands by group, examples."""
    width = width or min(shutil.get_terminal_size().columns, 100)
    column = max(map(len, COMMANDS), default=0) + 4
    wrap = textwrap.TextWrapper(width=max(width - 2, 40))
    indented = textwrap.TextWrapper(
        width=max(width - 2, column + 20), subsequent_indent=" " * column
    )
    lines = [usage(), "", *wrap.wrap(ABOUT)]
    known = list(GROUPS)
    others = [c.group for c in COMMANDS.values() if c.group not in GROUPS]
    for group in known + list(dict.fromkeys(others)):
        names = [name for name, c in COMMANDS.items() if c.group == group]
        if not names:
            continue
        lines += ["", f"{GROUPS.get(group, group)}:"]
        for name in names:
            lines += indented.wrap(f"  {name:<{column - 2}}{COMMANDS[name].description}")
    lines += [
        "",
        "options:",
        "  -h, --help     show this help and exit",
        "  -V, --version  show the version of ccexport and exit",
        "",
        examples_text(EXAMPLES),
        "",
        "Each command explains itself: ccexport COMMAND --help",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logs.configure(os.environ)  # CCEXPORT_LOG_FORMAT=json: every record as a JSON line
    close_telemetry = telemetry_file.install(os.environ)  # CCEXPORT_TELEMETRY_FILE
    try:
        return _main(args)
    finally:
        if close_telemetry is not None:
            close_telemetry()


def _main(args: list[str]) -> int:
    if not args:
        print(main_help(), file=sys.stderr)
        return EXIT_INPUT
    first = args[0]
    if first in {"-h", "--help"}:
        print(main_help())
        return 0
    if first in {"-V", "--version"}:
        print(f"ccexport {version()}")
        return 0
    command = COMMANDS.get(first)
    if command is None:
        what = "option" if first.startswith("-") else "command"
        return fail(
            f"unknown {what} '{first}'; the commands are {', '.join(COMMANDS)} "
            "(ccexport --help says what each does)",
            EXIT_INPUT,
        )
    return command.handler(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
