"""``ccexport sandbox``: run the local Constant Contact V3 stand-in on 127.0.0.1.

The API is served at http://127.0.0.1:PORT/v3 and OAuth at
http://127.0.0.1:PORT/oauth2/default/v1/{authorize,token}. State is kept in memory
only; it is gone when the process stops. SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from sandbox.app import create_app
from sandbox.config import SandboxConfig
from sandbox.faults import FaultError, Faults
from shared.workstation.cli_help import command_parser

HOST = "127.0.0.1"  # loopback only, always


DESCRIPTION = """\
Run a local stand-in for Constant Contact, to try ccexport without an account.

It answers the Constant Contact V3 API at http://127.0.0.1:PORT/v3 and signs you
in at once at http://127.0.0.1:PORT/oauth2/default/v1, on this machine only. What
it holds is kept in memory and gone when it stops (Ctrl-C). Point ccexport at it
with CTCT_API_BASE, CTCT_AUTH_BASE and CTCT_CLIENT_ID. The fault options make it
misbehave on purpose, to see how a run copes."""

EXAMPLES = (
    ("a sandbox on port 9000", "ccexport sandbox --port 9000"),
    (
        "one that answers 10% of requests with 503 and fails 5% of imports",
        "ccexport sandbox --port 9000 --fault-503-rate 0.1 --fault-import-failed-rate 0.05",
    ),
)


def parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    parser = command_parser("sandbox", DESCRIPTION, EXAMPLES)
    add = parser.add_argument
    add("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    add(
        "--client-id",
        default=defaults.client_id,
        metavar="ID",
        help="the API key clients must present",
    )
    add(
        "--client-secret",
        default=defaults.client_secret,
        metavar="SECRET",
        help="the client secret (Basic auth)",
    )
    add("--rotating-refresh-tokens", action="store_true", help="single-use refresh tokens")
    add(
        "--access-token-ttl",
        type=float,
        default=defaults.access_token_ttl,
        metavar="SECONDS",
        help="how long an access token is valid",
    )
    add(
        "--refresh-token-ttl",
        type=float,
        default=defaults.refresh_token_ttl,
        metavar="SECONDS",
        help="how long an unused refresh token is valid",
    )
    add(
        "--redirect-uri",
        action="append",
        default=[],
        metavar="URI",
        help="allowed redirect URI (repeatable; default: any)",
    )
    add(
        "--rate-limit",
        type=float,
        default=defaults.requests_per_second,
        metavar="PER_SECOND",
        help="API requests per second per client (0: unlimited)",
    )
    add(
        "--daily-quota",
        type=int,
        metavar="N",
        default=defaults.daily_quota,
        help="API requests per UTC day (0: unlimited)",
    )
    add(
        "--token-rate-limit",
        type=float,
        default=defaults.token_requests_per_second,
        metavar="PER_SECOND",
        help="token requests per second per client",
    )
    add(
        "--max-queued-activities",
        type=int,
        default=defaults.max_queued_activities,
        metavar="N",
        help="bulk activities queued at once before new ones are refused (429)",
    )
    add(
        "--activity-delay",
        type=float,
        default=defaults.activity_delay,
        metavar="SECONDS",
        help="time an activity stays initialized at least",
    )
    add(
        "--import-rate",
        type=float,
        default=defaults.items_per_second,
        metavar="ITEMS_PER_SECOND",
        help="pace at which activities process contacts",
    )
    add(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="seed for the fault dice (default: random)",
    )
    faults = parser.add_argument_group("faults (rates are probabilities 0..1)")
    for name in ("500", "503"):
        faults.add_argument(
            f"--fault-{name}-rate",
            type=float,
            default=0.0,
            metavar="RATE",
            help=f"share of API requests answered {name}",
        )
    faults.add_argument(
        "--fault-reset-rate",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of API requests whose connection is reset",
    )
    faults.add_argument(
        "--fault-latency-rate",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of API requests answered late",
    )
    faults.add_argument(
        "--fault-latency-seconds",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how late (with --fault-latency-rate)",
    )
    faults.add_argument(
        "--fault-import-failed-rate",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of imports that end failed",
    )
    faults.add_argument(
        "--fault-import-timed-out-rate",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of imports that end timed out",
    )
    faults.add_argument(
        "--fault-token-error-rate",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of token requests answered with an error",
    )
    return parser  # fmt: skip


def config_from(args: argparse.Namespace) -> SandboxConfig:
    faults: dict[str, dict[str, Any]] = {
        "http_500": {"rate": args.fault_500_rate},
        "http_503": {"rate": args.fault_503_rate},
        "reset": {"rate": args.fault_reset_rate},
        "latency": {"rate": args.fault_latency_rate, "seconds": args.fault_latency_seconds},
        "import_failed": {"rate": args.fault_import_failed_rate},
        "import_timed_out": {"rate": args.fault_import_timed_out_rate},
        "token_error": {"rate": args.fault_token_error_rate},
    }
    return SandboxConfig(
        client_id=args.client_id,
        client_secret=args.client_secret,
        rotating_refresh_tokens=args.rotating_refresh_tokens,
        access_token_ttl=args.access_token_ttl,
        refresh_token_ttl=args.refresh_token_ttl,
        redirect_uris=tuple(args.redirect_uri),
        requests_per_second=args.rate_limit,
        daily_quota=args.daily_quota,
        token_requests_per_second=args.token_rate_limit,
        max_queued_activities=args.max_queued_activities,
        activity_delay=args.activity_delay,
        items_per_second=args.import_rate,
        seed=args.seed,
        faults=faults,
    )


async def serve(config: SandboxConfig, port: int) -> None:
    """Serve until SIGTERM or SIGINT; print one line once ready."""
    runner = web.AppRunner(create_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        bound = runner.addresses[0][1]
        print(
            f"sandbox listening on http://{HOST}:{bound} (API /v3, OAuth /oauth2/default/v1; "
            "state in memory only)",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    config = config_from(args)
    try:
        Faults().update(config.faults)  # refuse bad fault flags before binding the port
    except FaultError as exc:
        print(f"ccexport sandbox: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(config, args.port))
    return 0
