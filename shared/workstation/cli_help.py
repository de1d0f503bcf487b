"""How every ``ccexport COMMAND --help`` looks: one parser builder for all commands.

``command_parser(name, description, examples)`` gives a parser whose program name is
``ccexport NAME``, whose options show their defaults, and whose help ends with
examples. Every command module builds its parser with it and exposes it as
``parser()`` (tests/test_cli_help.py checks each command in ``shared.workstation.cli.COMMANDS``).

Help strings go through ``%``-formatting (``%(default)s``): write a literal percent
sign as ``%%``.

Imports argparse only: ``ccexport --help`` and short commands load it at start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

Example = tuple[str, str]
"""(what it does, the command line: break a long one with a backslash and a newline)."""

DEFAULT_MARK = "(default"


class CommandHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; after each option's help, its default.

    Like ``argparse.ArgumentDefaultsHelpFormatter``, without the noise: a default of
    None (not given), False (a flag) or an empty list is not shown, nor one the help
    already states.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 32,
        width: int | None = None,
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            DEFAULT_MARK in text
            or "%(default)" in text
            or not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
        ):
            return text
        return f"{text} (default: %(default)s)"


def examples_text(examples: Sequence[Example]) -> str:
    """The ``examples:`` block that ends a help text."""
    lines = ["examples:"]
    for what, command in examples:
        lines += [f"  # {what}", *(f"  {line}" for line in command.splitlines())]
    return "\n".join(lines)


def command_parser(
    name: str, description: str, examples: Sequence[Example], *, notes: str = ""
) -> argparse.ArgumentParser:
    """The parser of ``ccexport NAME``: its description, then options, notes, examples.

    ``description`` opens the help (its first line says what the command does);
    ``notes`` (exit statuses, settings) come after the options, before the examples.
    """
    if not description.strip():
        raise ValueError(f"ccexport {name}: a command needs a description")
    if not examples:
        raise ValueError(f"ccexport {name}: a command needs at least one example")
    epilog = examples_text(examples)
    if notes:
        epilog = f"{notes.strip()}\n\n{epilog}"
    return argparse.ArgumentParser(
        prog=f"ccexport {name}",
        description=description,
        epilog=epilog,
        formatter_class=CommandHelpFormatter,
    )


def add_connection_option(
    parser: argparse.ArgumentParser,
    *,
    default: str,
    help: str,
    name_alias: bool = False,
    default_text: str | None = None,
) -> None:
    """``--connection NAME``: the one name for a connected Constant Contact account.

    ``name_alias`` keeps the older ``--name`` working, hidden from the help (same dest).
    ``default_text`` says the default in words where it is not a fixed name (the option
    itself then defaults to None, and the command decides).
    """
    shown = default_text or f"'{default}'"
    parser.add_argument(
        "--connection",
        default=None if default_text else default,
        metavar="NAME",
        help=f"{help} (default: {shown.replace('%', '%%')})",
    )
    if name_alias:
        parser.add_argument(
            "--name", dest="connection", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )


EXIT_INPUT = 2
EXIT_FAILED = 1


def fail(message: str, code: int) -> int:
    print(f"ccexport: error: {message}", file=sys.stderr)
    return code
