"""The `ccexport` command line. Reads flags and the environment once, here at the edge.

Each command's module is imported only when that command runs, so a short command
(`check`, run 24 at a time) does not pay for loading the Azure SDKs it never uses.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from shared import exports
from shared.errors import CcexportError, InputError

EXIT_INPUT = 2
EXIT_FAILED = 1


def _fail(message: str, code: int) -> int:
    print(f"ccexport: error: {message}", file=sys.stderr)
    return code


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a user can act on into one line on stderr, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except InputError as exc:
            return _fail(str(exc), EXIT_INPUT)
        except CcexportError as exc:
            return _fail(str(exc), EXIT_FAILED)
        except KeyboardInterrupt:
            return _fail("interrupted", 130)
        except Exception as exc:
            if os.environ.get("CCEXPORT_DEBUG"):
                raise
            return _fail(
                f"unexpected {type(exc).__name__}: {exc} (CCEXPORT_DEBUG=1 shows where)",
                EXIT_FAILED,
            )

    return run


def _export_from_args(args: argparse.Namespace) -> exports.ExportDefinition:
    maps = exports.parse_maps(args.map or [])
    if args.config:
        base = exports.load(Path(args.config))
        return base.with_overrides(
            list_ids=args.list_id or [], mapping=maps, max_profiles=args.max_profiles
        )
    return exports.ExportDefinition(
        list_ids=tuple(dict.fromkeys(exports.check_list_id(v) for v in args.list_id or [])),
        mapping=maps,
        max_profiles=args.max_profiles or exports.DEFAULT_MAX_PROFILES,
    )


def _prepare(argv: Sequence[str]) -> int:
    from shared import prepare_command  # noqa: PLC0415 - loads the prepare stack only when used

    return prepare_command.main(argv)


def _sandbox(argv: Sequence[str]) -> int:
    # Imported lazily: the sandbox is a local tool, not part of the deployed app.
    from sandbox.cli import main as sandbox_main  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    code: int = sandbox_main(list(argv))
    return code


def _connect(argv: Sequence[str]) -> int:
    from shared import connection_commands  # noqa: PLC0415 - only this command needs it

    args = connection_commands.connect_parser().parse_args(list(argv))
    return guarded(lambda a: connection_commands.run_connect(a, os.environ))(args)


def _check(argv: Sequence[str]) -> int:
    from shared import connection_commands  # noqa: PLC0415 - only this command needs it

    args = connection_commands.check_parser().parse_args(list(argv))
    return guarded(lambda a: connection_commands.run_check(a, os.environ))(args)


def _run(argv: Sequence[str]) -> int:
    # Lazily: the run command loads the function app's orchestrator and activities.
    from shared import run_command  # noqa: PLC0415

    return run_command.main(argv)


COMMANDS = {
    "prepare": (_prepare, "map, validate and chunk a segment export (dry run)"),
    "run": (_run, "export a segment end to end: prepare, import, wait, report"),
    "sandbox": (_sandbox, "run the local Constant Contact V3 stand-in"),
    "connect": (_connect, "connect a Constant Contact account (OAuth) and store its tokens"),
    "check": (_check, "prove a connection works: a valid token and an existing list"),
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
