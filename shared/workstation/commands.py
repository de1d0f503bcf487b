"""What every command shares: errors as one line on stderr, the export from its flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from shared.errors import CcexportError, InputError
from shared.exports import definitions as exports
from shared.workstation.cli_help import EXIT_FAILED, EXIT_INPUT, fail


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a user can act on into one line on stderr, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except InputError as exc:
            return fail(str(exc), EXIT_INPUT)
        except CcexportError as exc:
            return fail(str(exc), EXIT_FAILED)
        except KeyboardInterrupt:
            return fail("interrupted", 130)
        except Exception as exc:
            if os.environ.get("CCEXPORT_DEBUG"):
                raise
            return fail(
                f"unexpected {type(exc).__name__}: {exc} (CCEXPORT_DEBUG=1 shows where)",
                EXIT_FAILED,
            )

    return run


def export_from_args(args: argparse.Namespace) -> exports.ExportDefinition:
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
