"""The `ccexport` command line. Reads flags and the environment once, here at the edge."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _sandbox(argv: Sequence[str]) -> int:
    # Imported lazily: the sandbox is a local tool, not part of the deployed app.
    from sandbox.cli import main as sandbox_main  # noqa: PLC0415

    return sandbox_main(list(argv))


COMMANDS = {
    "sandbox": (_sandbox, "run the local Constant Contact V3 stand-in"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"} or args[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="ccexport", description=__doc__)
        parser.add_argument("command", choices=sorted(COMMANDS))
        if args and args[0] not in {"-h", "--help"}:
            parser.error(f"unknown command {args[0]!r}")
        parser.print_help()
        return 0 if args else 2
    handler, _help = COMMANDS[args[0]]
    return handler(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
