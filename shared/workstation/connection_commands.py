"""``ccexport connect`` and ``ccexport check``: connect an account, and prove it works.

``connect`` runs the authorization code flow with PKCE through a loopback redirect:
a tiny server on 127.0.0.1 receives the callback, the same ``Connections`` code the
function app uses checks the state, exchanges the code and stores the tokens. It
opens a browser only where there is a display and a terminal; against a local
authorization server (the sandbox approves at once) it follows the redirect itself.

``check`` gets a valid access token (refreshing it when needed, one refresh at a
time across processes through a file lock) and confirms that the lists exist (by id
or by name) and that the mapped custom fields do (creating them with
``--create-fields``). ``account_client`` is that token handling for every command
that reads the account (``ccexport lists`` too).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import webbrowser
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web

from shared.config import Config, Settings
from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.connect import Connections
from shared.constant_contact.connections import DEFAULT_CONNECTION, check_connection
from shared.constant_contact.contacts import EMAIL, validate_mapping
from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.pacing import Pacer
from shared.constant_contact.tokens import TokenManager, read_status
from shared.errors import (
    AuthorizationError,
    CcexportError,
    InputError,
    ReauthorizationRequired,
)
from shared.exports import definitions as exports
from shared.exports.account import check_account
from shared.exports.definitions import check_list_id
from shared.secrets.opening import open_secret_store
from shared.secrets.store import SecretStore
from shared.storage.locks import FileLocks
from shared.wiring import clients
from shared.workstation.cli_help import add_connection_option, command_parser
from shared.workstation.commands import guarded

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8765
CALLBACK_PATH = "/callback"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@asynccontextmanager
async def _connections(settings: Settings) -> AsyncIterator[Connections]:
    """Store, file locks and token client for one command; the store closed afterwards."""
    settings.require_client_id()
    store: SecretStore = open_secret_store(settings.store_settings)
    try:
        yield await clients.connections(settings, store, FileLocks(settings.home))()
    finally:
        await store.close()


# --- connect ---------------------------------------------------------------------------


@dataclass
class _Callback:
    redirect_uri: str
    result: asyncio.Future[Mapping[str, str]] = field(repr=False)


@asynccontextmanager
async def _loopback(port: int) -> AsyncIterator[_Callback]:
    """A one-route server on 127.0.0.1 that hands the first callback's query back."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Mapping[str, str]] = loop.create_future()

    async def callback(request: web.Request) -> web.Response:
        query = request.query
        if "state" not in query or ("code" not in query and "error" not in query):
            raise web.HTTPNotFound
        if not result.done():
            result.set_result({key: query[key] for key in query})
        return web.Response(
            text="Authorization received. You can close this window and return to ccexport.\n"
        )

    app = web.Application()
    app.router.add_get(CALLBACK_PATH, callback)
    runner = web.AppRunner(app, access_log=None)  # the callback URL holds the code
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK, port)
        try:
            await site.start()
        except OSError as exc:
            raise InputError(
                f"cannot listen on {LOOPBACK}:{port} for the OAuth callback ({exc.strerror}); "
                "choose another --port (it must match the app's registered redirect URI)"
            ) from None
        bound = runner.addresses[0][1]
        yield _Callback(f"http://{LOOPBACK}:{bound}{CALLBACK_PATH}", result)
    finally:
        await runner.cleanup()


def _mode(args: argparse.Namespace, settings: Settings) -> str:
    """auto (follow the redirect ourselves), browser, or print (the user opens it)."""
    if args.auto:
        return "auto"
    if args.no_browser:
        return "print"
    if urlsplit(settings.auth_base).hostname in _LOCAL_HOSTS:
        return "auto"  # a local authorization server (the sandbox) approves at once
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if (has_display or sys.platform == "darwin") and sys.stdin.isatty():
        return "browser"
    return "print"


async def _follow(url: str) -> None:
    """Fetch the authorize URL and follow its redirects down to our callback."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        if response.status >= 400:
            body = await response.read()
            try:
                doc = orjson.loads(body)
                detail = f"{doc.get('error')}: {doc.get('error_description')}"
            except (orjson.JSONDecodeError, AttributeError):
                detail = f"HTTP {response.status}"
            raise AuthorizationError(f"the authorization server refused: {detail[:300]}")


async def connect(
    settings: Settings, connection: str, *, port: int, mode: str, timeout: float, out: TextIO
) -> TokenBundle:
    check_connection(connection)
    async with _connections(settings) as connections, _loopback(port) as callback:
        url, _pending = await connections.start_authorization(connection, callback.redirect_uri)
        print(f"Authorize ccexport for connection {connection!r} at:\n  {url}", file=out)
        follower: asyncio.Task[None] | None = None
        if mode == "auto":
            follower = asyncio.create_task(_follow(url))
        elif mode == "browser":
            webbrowser.open(url)
        print(f"Waiting for the redirect to {callback.redirect_uri} ...", file=out)
        try:
            waiters: set[asyncio.Future[Any]] = {callback.result}
            if follower is not None:
                waiters.add(follower)
            done, _ = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if follower is not None and follower in done and not callback.result.done():
                follower.result()  # raises what the authorization server said
            if not callback.result.done():
                raise AuthorizationError(f"no authorization arrived within {timeout:g}s")
            params = callback.result.result()
        finally:
            if follower is not None and not follower.done():
                follower.cancel()
        if "error" in params:
            raise AuthorizationError(
                f"Constant Contact did not authorize: {params['error'][:100]}: "
                f"{params.get('error_description', '')[:300]}"
            )
        return await connections.complete_authorization(
            connection, params["state"], params["code"], callback.redirect_uri
        )


CONNECT_DESCRIPTION = """\
Connect a Constant Contact account to ccexport: sign in once, and its tokens are
kept for every later run.

It prints (or opens in your browser) a Constant Contact sign-in address; once you
approve, Constant Contact redirects to http://127.0.0.1:PORT/callback on this
machine, and ccexport stores the tokens: in Azure Key Vault when KEY_VAULT_URL is
set, else in a private file under CCEXPORT_HOME. Connect again whenever a run or
`ccexport check` says the connection needs it."""

CONNECT_EXAMPLES = (
    ("connect your account under the name 'default'", "ccexport connect"),
    (
        "a second account, on a server without a browser",
        "ccexport connect --connection acme --no-browser",
    ),
)


def connect_parser() -> argparse.ArgumentParser:
    parser = command_parser("connect", CONNECT_DESCRIPTION, CONNECT_EXAMPLES)
    add_connection_option(
        parser,
        default=DEFAULT_CONNECTION,
        help="a name for this account; runs and checks use it with --connection",
        name_alias=True,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 for the redirect http://127.0.0.1:PORT{CALLBACK_PATH} "
        "(register that address with your Constant Contact app; 0: any free port)",
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--no-browser",
        action="store_true",
        help="only print the sign-in address, to open in a browser yourself",
    )
    how.add_argument(
        "--auto",
        action="store_true",
        help="follow the sign-in redirect without a browser (a local authorization "
        "server, such as `ccexport sandbox`)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for your approval",
    )
    return parser


def connect_main(argv: Sequence[str]) -> int:
    args = connect_parser().parse_args(list(argv))
    return guarded(lambda a: run_connect(a, os.environ))(args)


def _logs(env: Mapping[str, str]) -> None:
    """Errors reach the user as one line from the CLI; log lines only when debugging."""
    if env.get("CCEXPORT_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    elif not logging.getLogger().handlers:
        logging.getLogger("shared").addHandler(logging.NullHandler())


def run_connect(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _logs(env)
    settings = Config.from_mapping(env).ctct
    bundle = asyncio.run(
        connect(
            settings,
            args.connection,
            port=args.port,
            mode=_mode(args, settings),
            timeout=args.timeout,
            out=sys.stderr,
        )
    )
    refresh = "stored" if bundle.refresh_token else "NOT granted"
    print(
        f"connected {args.connection!r} (scope {bundle.scope or 'unknown'}; access token "
        f"valid until {_iso(bundle.expires_at)}; refresh token {refresh})"
    )
    return 0


# --- check ----------------------------------------------------------------------------------


@asynccontextmanager
async def account_client(
    settings: Settings, connection: str, pacer: Pacer | None = None
) -> AsyncIterator[tuple[TokenManager, ConstantContactClient]]:
    """A usable access token of a connected account and a client with it: the token
    refreshed when needed (one refresh at a time across processes), requests paced
    under the API key's budget: ``pacer`` (``clients.run_pacer``: shared with the app
    through the storage account when one is set), else the file every command of this
    CCEXPORT_HOME shares."""
    check_connection(connection)
    async with _connections(settings) as connections:
        marked = await read_status(connections.store, connection)
        if marked is not None:
            raise ReauthorizationRequired(connection, marked)
        manager = connections.tokens(connection)
        await manager.access_token()
        pacer = pacer or clients.shared_pacer(settings)
        async with ConstantContactClient(settings.api_base, manager.access_token, pacer) as client:
            yield manager, client


async def check(
    settings: Settings,
    connection: str,
    list_ids: Sequence[str],
    custom_fields: Sequence[str] = (),
    *,
    create_fields: bool = False,
    pacer: Pacer | None = None,
) -> dict[str, Any]:
    """A valid access token, existing lists (ids or names) and custom fields, or an
    error saying which is missing."""
    async with account_client(settings, connection, pacer) as (manager, client):
        source = manager.source
        found = await check_account(
            client, list_ids, custom_fields, connection=connection, create_fields=create_fields
        )
    lists = [
        {"list_id": lst.list_id, "name": lst.name, "membership_count": lst.membership_count}
        for lst in found.lists
    ]
    return {
        "ok": True,
        "connection": connection,
        "token": {
            "source": source,  # cache, store or refresh
            "expires_at": _iso(manager.expires_at or 0.0),
            "scope": manager.scope,
            "refreshed_here": manager.refreshes,
        },
        "list": lists[0],
        "lists": lists,
        "list_names": dict(found.names),
        "custom_fields": {
            "checked": list(found.custom_fields),
            "created": list(found.created_fields),
        },
        "requests": client.stats.requests,
    }


CHECK_DESCRIPTION = """\
Check that a connection works: that its access token is valid (renewed when
needed), that Constant Contact lists exist in its account (by id or by name) and,
with --map or --config, that the custom fields it maps (cf:NAME) exist. Sends no
contacts.

Run it after `ccexport connect`, or before a run to catch a typo in a list or a
custom field; --create-fields creates the missing custom fields (as text fields)."""

CHECK_EXAMPLES = (
    (
        "check the default connection and a list",
        "ccexport check --list-id 3fa85f64-5717-4562-b3fc-2c963f66afa6",
    ),
    (
        "a list by its name, on another connection, the answer as JSON",
        "ccexport check --list-id 'Newsletter NL' --connection acme --json",
    ),
    (
        "an export definition's lists and custom fields, creating the missing fields",
        "ccexport check --config high-value.json --create-fields",
    ),
)

CHECK_NOTES = """\
exit status: 0 when all hold; 2 when a list or a custom field does not exist (or a
list is neither an id nor a name); 1 when the connection must be made again or
Constant Contact fails (one line on stderr says why)"""


def check_parser() -> argparse.ArgumentParser:
    parser = command_parser("check", CHECK_DESCRIPTION, CHECK_EXAMPLES, notes=CHECK_NOTES)
    parser.add_argument(
        "--list-id",
        action="append",
        metavar="UUID|NAME",
        help="a Constant Contact list that must exist: its id or its name (repeatable; "
        "at least one, here or in --config)",
    )
    parser.add_argument(
        "--map",
        action="append",
        metavar="FIELD=COLUMN",
        help="a mapping as `ccexport run` takes it; its cf:NAME custom fields must exist "
        "(repeatable; default: none)",
    )
    parser.add_argument(
        "--config",
        metavar="EXPORT.json",
        help="an export definition: its lists and the custom fields of its mapping must "
        "exist (default: none)",
    )
    parser.add_argument(
        "--create-fields",
        action="store_true",
        help="create the mapped custom fields the account lacks, as text fields "
        "(default: report them as missing)",
    )
    add_connection_option(
        parser, default=DEFAULT_CONNECTION, help="the connection to check", name_alias=True
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON on stdout (default: one line of text)",
    )
    return parser


def check_main(argv: Sequence[str]) -> int:
    args = check_parser().parse_args(list(argv))
    return guarded(lambda a: run_check(a, os.environ))(args)


def _check_targets(args: argparse.Namespace) -> tuple[list[str], list[str], bool]:
    """The lists, the custom fields and whether to create them, from the flags."""
    lists: list[str] = []
    mapping: dict[str, str] = {}
    create = bool(args.create_fields)
    if args.config:
        definition = exports.load(Path(args.config))
        lists += definition.list_ids
        mapping.update(definition.mapping)
        create = create or definition.create_custom_fields
    lists += [check_list_id(value) for value in args.list_id or []]
    maps = exports.parse_maps(args.map or [])
    if maps:
        validate_mapping({EMAIL: "-", **maps})  # the names; a check needs no email column
    mapping.update(maps)
    if not lists:
        raise InputError(
            "no list to check: give --list-id (a list id or name, repeatable) or --config"
        )
    fields = [target[3:] for target in mapping if target.startswith("cf:")]
    return list(dict.fromkeys(lists)), fields, create


def run_check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _logs(env)
    try:
        lists, fields, create = _check_targets(args)
        config = Config.from_mapping(env)
        pacer = clients.run_pacer(config)
        report = asyncio.run(
            check(config.ctct, args.connection, lists, fields, create_fields=create, pacer=pacer)
        )
    except CcexportError as exc:
        if args.json:
            failure = {"ok": False, "connection": args.connection, "error": str(exc)}
            sys.stdout.write(orjson.dumps(failure).decode() + "\n")
        raise
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(_check_line(args.connection, report))
    return 0


def _check_line(connection: str, report: Mapping[str, Any]) -> str:
    found = report["lists"]
    if len(found) == 1:
        lists = f"list {found[0]['list_id']} exists ({found[0]['name']})"
    else:
        each = ", ".join(f"{lst['list_id']} ({lst['name']})" for lst in found)
        lists = f"lists {each} exist"
    line = (
        f"ok: connection {connection!r} has a valid access token (until "
        f"{report['token']['expires_at']}) and {lists}"
    )
    fields = report["custom_fields"]
    if fields["checked"]:
        line += "; custom fields " + ", ".join(f"cf:{name}" for name in fields["checked"])
        line += " exist"
        if fields["created"]:
            line += " (created now: " + ", ".join(f"cf:{n}" for n in fields["created"]) + ")"
    return line
