"""The `ccexport` command line. Reads flags and the environment once, here at the edge."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from shared import exports, files, segments, storage
from shared.chunks import DEFAULT_MAX_BODY_BYTES
from shared.errors import CcexportError, InputError
from shared.outputs import BlobOutput, LocalOutput, PreparedOutput
from shared.prepare import prepare

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
    export = _export_from_args(args)
    conn = storage.connection_string(os.environ)
    service = storage.blob_service(conn) if conn else None
    store, name = files.resolve(args.source, service)
    segment = segments.locate(store, name, encoding=export.encoding)
    result = prepare(
        segment,
        export,
        _output(args.out, service),
        max_body_bytes=args.max_body_bytes,
        workers=args.workers,
    )
    if args.json:
        sys.stdout.write(orjson.dumps(result.summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_summary(result.summary, result.location)
    return 0


def _print_summary(s: dict[str, Any], location: str) -> None:
    print(f"prepared {s['source']}")
    print(f"  rows read   {s['rows_read']:>10,}")
    print(f"  contacts    {s['contacts']:>10,}")
    print(f"  duplicates  {s['duplicates']:>10,}")
    print(f"  rejected    {s['rejected']:>10,}  {s['reject_reasons'] or ''}")
    for key in ("truncated", "invalid_values"):
        if s[key]:
            print(f"  {key.replace('_', ' '):<11} {s[key]}")
    print(
        f"  chunks      {s['chunks']:>10,}  (fewest possible {s['fewest_chunks_possible']}, "
        f"largest {s['largest_chunk_bytes']:,} bytes)"
    )
    print(f"  output      {location}")


def _prepare_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ccexport prepare",
        description="Map, validate and chunk a segment export without sending anything.",
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a CSV file, a Customer Insights run or table folder, or az://CONTAINER/PATH",
    )
    parser.add_argument(
        "--list-id", action="append", metavar="UUID", help="Constant Contact list id (repeatable)"
    )
    parser.add_argument(
        "--map",
        action="append",
        metavar="FIELD=COLUMN",
        help="map a column to a contact field, e.g. email=PrimaryEmail (repeatable)",
    )
    parser.add_argument("--config", metavar="EXPORT.json", help="an export definition file")
    parser.add_argument(
        "--max-profiles",
        type=int,
        metavar="N",
        help=f"refuse exports with more rows (default {exports.DEFAULT_MAX_PROFILES:,})",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (or az://CONTAINER/PREFIX)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument(
        "--workers", type=int, metavar="N",
        help="processes that parse and map in parallel (default: 2 when there are 2 cores)",
    )  # fmt: skip
    parser.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help=argparse.SUPPRESS
    )
    return _prepare(parser.parse_args(list(argv)))


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
    "prepare": (_prepare_command, "map, validate and chunk a segment export (dry run)"),
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
