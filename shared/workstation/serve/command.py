"""``ccexport serve``: start the function app on 127.0.0.1 and keep it up until stopped.

Settings come from the environment, as app settings do in Azure (``CTCT_*``,
``KEY_VAULT_URL``, ``CCEXPORT_STORAGE`` …). With no storage connection the inbox is a
folder (``--inbox``, default ``CCEXPORT_HOME/inbox``) and definitions, connections and
run records are files under ``CCEXPORT_HOME``; with one, everything is in Blob Storage
(Azurite locally), as deployed.

On SIGINT or SIGTERM serve stops taking requests and events, gives the runs in flight
``--grace`` seconds to end, then stops. A run cut short keeps what it had done in the
run store (accepted imports are marked): starting it again sends only the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from shared.config import AppSettings
from shared.errors import CcexportError, ConfigError
from shared.workstation import logs
from shared.workstation.cli_help import command_parser
from shared.workstation.serve.options import LOCAL_TENANT, LOOPBACK, ServeOptions

log = logging.getLogger("ccexport.serve")

DEFAULT_PORT = 7071
DEFAULT_USER = "local-admin"
DEFAULT_ROLE = "admin"
DEFAULT_SCHEDULE = "0 */15 * * * *"
"""The timer's schedule when EXPORT_SCHEDULE is not set: a quarter-hourly refresh."""
DEFAULT_GRACE = 30.0


def parser() -> argparse.ArgumentParser:
    p = command_parser(
        "serve",
        "Run the function app on this machine: its HTTP API at /api, its orchestrations\n"
        "and activities on a local Durable engine, the timer, and an inbox where a new\n"
        "Customer Insights run folder starts its runs, as in Azure. Listens on\n"
        f"{LOOPBACK} only; the Azure Functions Core Tools are not needed.",
        [
            ("serve on the default port, inbox in CCEXPORT_HOME/inbox", "ccexport serve"),
            (
                "a contributor with the marketing role, inbox in ./drop, no timer",
                "ccexport serve --port 7072 --inbox ./drop --user ana --role marketing --no-timer",
            ),
        ],
        notes=(
            "The first line on stdout is 'serving http://127.0.0.1:PORT/api', the second\n"
            "'console http://127.0.0.1:PORT/api/console/' (open it in a browser).\n"
            "Settings are read from the environment, as the app's settings in Azure:\n"
            "CTCT_CLIENT_ID, CTCT_API_BASE, CTCT_AUTH_BASE, KEY_VAULT_URL, CCEXPORT_HOME,\n"
            "CCEXPORT_STORAGE (a connection string: the inbox is then the container\n"
            f"INBOX_CONTAINER), EXPORT_SCHEDULE (default '{DEFAULT_SCHEDULE}').\n"
            "Every caller is signed in as --user with the --role roles, as App Service\n"
            "authentication would; a principal header sent by a client is removed."
        ),
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1 (0 picks a free one)"
    )
    p.add_argument(
        "--inbox",
        metavar="DIR",
        help="the inbox folder, when no storage connection is set (default: CCEXPORT_HOME/inbox)",
    )
    p.add_argument(
        "--user", default=DEFAULT_USER, help="the signed-in user every request comes from"
    )
    p.add_argument(
        "--role",
        action="append",
        metavar="ROLE",
        help=f"an app role of that user; repeat for several (default: {DEFAULT_ROLE})",
    )
    p.add_argument("--no-timer", action="store_true", help="do not run the timer trigger")
    p.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="on stop, how long runs in flight may take to end",
    )
    return p


def prepare_environment(args: argparse.Namespace, env: MutableMapping[str, str]) -> ServeOptions:
    """Fill in what the Functions host and infra/ would set; check the flags."""
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535, not {args.port}")
    if args.grace < 0:
        raise ConfigError("--grace must be 0 or more seconds")
    if not args.user.strip():
        raise ConfigError("--user must name someone")
    roles = tuple(dict.fromkeys(r.strip() for r in (args.role or [DEFAULT_ROLE]) if r.strip()))
    env.setdefault("INBOX_CONTAINER", "inbox")
    # serve signs every request in, as App Service authentication would: the app then
    # trusts the principal it presents, of the tenant set here (functions/principal.py).
    env["WEBSITE_AUTH_ENABLED"] = "True"
    env["CCEXPORT_TENANT_ID"] = LOCAL_TENANT
    env.setdefault("EXPORT_SCHEDULE", DEFAULT_SCHEDULE)
    settings = AppSettings.from_mapping(env)
    inbox: Path | None = None
    if settings.has_storage:
        if args.inbox:
            raise ConfigError(
                "--inbox is for serving without a storage connection; with one, the inbox "
                f"is the container {settings.inbox_container!r} (INBOX_CONTAINER)"
            )
    else:
        inbox = Path(args.inbox).expanduser() if args.inbox else settings.home / "inbox"
        try:
            inbox.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--inbox {inbox}: cannot create it ({exc.strerror})") from None
        if not inbox.is_dir():
            raise ConfigError(f"--inbox {inbox}: not a folder")
        if not os.access(inbox, os.R_OK | os.X_OK):
            raise ConfigError(f"--inbox {inbox}: this user cannot read it")
        env["CCEXPORT_LOCAL_INBOX"] = str(inbox.resolve())
    return ServeOptions(
        port=args.port,
        user=args.user.strip(),
        roles=roles,
        timer=not args.no_timer,
        grace=args.grace,
        inbox=inbox.resolve() if inbox else None,
    )


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    _configure_logging()
    try:
        options = prepare_environment(args, os.environ)
        from shared.workstation.serve.server import serve  # noqa: PLC0415 - loads the app and the engine

        return asyncio.run(serve(options, os.environ))
    except CcexportError as exc:
        print(f"ccexport serve: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except OSError as exc:
        print(f"ccexport serve: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _configure_logging() -> None:
    logs.configure(os.environ, always=True)
