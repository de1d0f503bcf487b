"""The toy export orchestrator on the local durabletask engine, with real activities.

The same generator also runs by replay through azure-functions-durable
(tests/test_durable_replay.py); here the two engines are compared directly too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import aiohttp
import psutil  # type: ignore[import-untyped]  # no stubs pinned
import pytest

from shared.workstation.local_engine import LocalEngine, RunState, RuntimeStatus
from tests.support import toy_export
from tests.support.durable_history import activities, run_by_replay
from tests.support.toy_export import job

CONCURRENCY = 4
TIMEOUT = 30.0


class InFlight:
    """Counts activities running at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = 0
        self.peak = 0

    def nap(self, seconds: float) -> None:
        with self._lock:
            self._now += 1
            self.peak = max(self.peak, self._now)
        time.sleep(seconds)
        with self._lock:
            self._now -= 1


def fan_out(context: Any) -> Generator[Any, Any, int]:
    naps = [context.call_activity("nap", 0.05) for _ in range(context.get_input())]
    yield context.task_all(naps)
    return len(naps)


def lost(context: Any) -> Generator[Any, Any, None]:
    yield context.call_activity("no_such_activity", None)


def race_a_failure(context: Any) -> Generator[Any, Any, dict[str, Any]]:
    """task_any whose winner failed: its ``result`` is the exception, not a raise."""
    ref = {"run": "race", "chunk": 0, "contacts": 1, "fate": "broken"}
    upload = context.call_activity(toy_export.UPLOAD_CHUNK, ref)
    later = context.create_timer(context.current_utc_datetime + timedelta(seconds=30))
    winner = yield context.task_any([upload, later])
    return {"upload_won": winner is upload, "result": str(winner.result)}


def count_down(context: Any) -> Generator[Any, Any, dict[str, Any] | None]:
    """Continues as new until nothing is left, each generation adding to the trail."""
    left, trail = context.get_input()["left"], context.get_input()["trail"]
    trail = [*trail, left]
    context.set_custom_status({"left": left})
    yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=20))
    if left > 0:
        context.continue_as_new({"left": left - 1, "trail": trail})
        return None
    return {"trail": trail}


IN_FLIGHT = InFlight()


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    local = LocalEngine(activity_concurrency=CONCURRENCY)
    # registered the way the function app's decorated orchestrator hands it over
    generator = toy_export.TOY_EXPORT.build().get_user_function().orchestrator_function
    local.register_orchestrator("toy_export", generator)
    local.register_orchestrator("replay_flags", toy_export.replay_flags)
    local.register_orchestrator("fan_out", fan_out)
    local.register_orchestrator("lost", lost)
    local.register_orchestrator("race_a_failure", race_a_failure)
    local.register_orchestrator("count_down", count_down)
    for name, activity in toy_export.ACTIVITIES.items():
        local.register_activity(name, activity)
    local.register_activity("nap", IN_FLIGHT.nap)
    with local:
        yield local


def test_toy_export_runs_with_retries_async_activities_and_timers(engine: LocalEngine) -> None:
    state = engine.run("toy_export", job("engine-happy"), timeout=TIMEOUT)

    assert state.status is RuntimeStatus.COMPLETED, state.failure
    assert state.output == {"chunks": 10, "imported": 1045, "polls": 3, "report": "sent"}
    assert state.custom_status == {"phase": "done", "done": 10, "total": 10}
    assert state.failure is None
    assert toy_export.attempts["engine-happy/upload/3"] == 3  # failed twice, then went through
    assert toy_export.attempts["engine-happy/upload/4"] == 1


def test_permanent_failure_is_caught_by_the_orchestrator(engine: LocalEngine) -> None:
    state = engine.run("toy_export", job("engine-report", report_fails=True), timeout=TIMEOUT)

    assert state.status is RuntimeStatus.COMPLETED
    assert state.output["report"] == (
        "not sent: Activity function 'send_report' failed: mail relay refused the report"
    )
    assert toy_export.attempts["engine-report/report"] == toy_export.ATTEMPTS


def test_uncaught_failure_fails_the_run(engine: LocalEngine) -> None:
    state = engine.run("toy_export", job("engine-broken", broken=[5]), timeout=TIMEOUT)

    assert state.status is RuntimeStatus.FAILED
    assert state.output is None
    assert state.failure is not None
    assert state.failure.startswith(
        "Activity function 'upload_chunk' failed: chunk 5 is malformed \n "
    )
    assert state.failure_type == "builtins.Exception"  # plain, as azure-functions-durable raises
    assert state.custom_status == {"phase": "uploading", "done": 4, "total": 10}
    assert toy_export.attempts["engine-broken/upload/5"] == toy_export.ATTEMPTS
    assert toy_export.attempts["engine-broken/upload/9"] == 0  # the third window never ran


@pytest.mark.parametrize(
    "overrides",
    [{}, {"report_fails": True}, {"broken": [1]}, {"flaky": [0, 9], "window": 3, "polls": 1}],
    ids=["happy", "report-fails", "broken", "other-shape"],
)
def test_both_engines_give_the_same_result(engine: LocalEngine, overrides: dict[str, Any]) -> None:
    tag = "-".join(f"{k}{v}" for k, v in overrides.items())
    on_engine = engine.run("toy_export", job(f"parity-engine{tag}", **overrides), timeout=TIMEOUT)
    by_replay = run_by_replay(
        toy_export.toy_export,
        job(f"parity-replay{tag}", **overrides),
        activities(toy_export.ACTIVITIES),
    ).final

    assert on_engine.output == by_replay.output
    assert on_engine.custom_status == by_replay.custom_status
    assert on_engine.failure == by_replay.error
    assert (on_engine.status is RuntimeStatus.COMPLETED) == by_replay.is_done


def test_is_replaying_matches_the_replay_engine(engine: LocalEngine) -> None:
    state = engine.run("replay_flags", timeout=TIMEOUT)

    assert state.output == [True, True, False]


def test_a_failed_task_any_winner_reads_the_same_on_both_engines(engine: LocalEngine) -> None:
    on_engine = engine.run("race_a_failure", timeout=TIMEOUT)
    by_replay = run_by_replay(race_a_failure, None, activities(toy_export.ACTIVITIES)).final

    assert on_engine.output == by_replay.output
    assert on_engine.output == {
        "upload_won": True,
        "result": "Activity function 'upload_chunk' failed: chunk 0 is malformed \n "
        '{"Message": "ChunkError: chunk 0 is malformed"}',
    }


def test_continue_as_new_runs_every_generation_and_ends_with_the_last(
    engine: LocalEngine,
) -> None:
    seen: list[Any] = []
    started = engine.start("count_down", {"left": 3, "trail": []}, instance_id="count-down")

    state = engine.wait(started.instance_id, TIMEOUT, on_progress=seen.append)
    by_replay = run_by_replay(count_down, {"left": 3, "trail": []}, activities({}))

    assert state.status is RuntimeStatus.COMPLETED
    assert state.instance_id == "count-down"  # one instance, generation after generation
    assert state.output == {"trail": [3, 2, 1, 0]}
    assert state.input == {"left": 0, "trail": [3, 2, 1]}  # the last generation's input
    assert state.custom_status == {"left": 0}
    assert [s.custom_status for s in seen][-1] == {"left": 0}
    assert by_replay.final.output == state.output
    assert by_replay.final.custom_status == state.custom_status
    assert len(by_replay.generations) == 4
    assert by_replay.continued == [
        {"left": 2, "trail": [3]},
        {"left": 1, "trail": [3, 2]},
        {"left": 0, "trail": [3, 2, 1]},
    ]
    # each generation's history is its own: started, one timer, and the end
    assert all(len(h.events) <= 8 for h in by_replay.generations)


def test_start_is_idempotent_for_a_running_or_completed_run(engine: LocalEngine) -> None:
    first = engine.start("toy_export", job("idem"), instance_id="export-idem")
    again = engine.start("toy_export", job("idem"), instance_id="export-idem")
    assert first.started
    assert first.instance_id == "export-idem"
    assert not again.started
    assert again.status in (RuntimeStatus.PENDING, RuntimeStatus.RUNNING)

    done = engine.wait("export-idem", TIMEOUT)
    after = engine.start("toy_export", job("idem"), instance_id="export-idem")

    assert done.status is RuntimeStatus.COMPLETED
    assert not after.started
    assert after.status is RuntimeStatus.COMPLETED
    assert toy_export.attempts["idem/upload/0"] == 1  # one run only


def test_a_failed_run_is_replaced_by_a_new_start(engine: LocalEngine) -> None:
    engine.start("toy_export", job("redo", broken=[0]), instance_id="export-redo")
    failed = engine.wait("export-redo", TIMEOUT)
    retried = engine.start("toy_export", job("redo-fixed"), instance_id="export-redo")
    fixed = engine.wait("export-redo", TIMEOUT)

    assert failed.status is RuntimeStatus.FAILED
    assert retried.started
    assert fixed.status is RuntimeStatus.COMPLETED
    assert fixed.output["imported"] == 1045


def test_progress_reports_each_custom_status_change(engine: LocalEngine) -> None:
    started = engine.start("toy_export", job("progress", polls=4, poll_ms=100))
    seen: list[RunState] = []

    final = engine.wait(started.instance_id, TIMEOUT, on_progress=seen.append, poll_interval=0.02)

    statuses = [s.custom_status for s in seen]
    assert statuses[-1] == final.custom_status == {"phase": "done", "done": 10, "total": 10}
    assert all(a != b for a, b in itertools.pairwise(statuses))
    phases = [s["phase"] for s in statuses if s is not None]
    assert "waiting" in phases  # the three 100 ms poll timers are long enough to be seen
    assert phases == sorted(phases, key=["uploading", "waiting", "done"].index)


def test_activity_concurrency_is_bounded(engine: LocalEngine) -> None:
    IN_FLIGHT.peak = 0

    state = engine.run("fan_out", 16, timeout=TIMEOUT)

    assert state.output == 16
    assert IN_FLIGHT.peak == CONCURRENCY


def test_an_unregistered_activity_fails_the_run_clearly(engine: LocalEngine) -> None:
    state = engine.run("lost", timeout=TIMEOUT)

    assert state.status is RuntimeStatus.FAILED
    assert (
        state.failure == "no activity named 'no_such_activity' is registered with the local engine"
    )
    assert state.failure_type == "builtins.LookupError"


def test_misuse_is_refused(engine: LocalEngine) -> None:
    with pytest.raises(LookupError, match="no orchestrator named 'nope'"):
        engine.start("nope")
    with pytest.raises(RuntimeError, match="before the first start"):
        engine.register_activity("late", IN_FLIGHT.nap)
    with pytest.raises(LookupError, match="no run with instance id"):
        engine.wait("never-started", 1)


def test_the_engine_listens_on_loopback_only(engine: LocalEngine) -> None:
    assert engine.address is not None
    host, port = engine.address.rsplit(":", 1)
    listening = [
        c.laddr
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)
    ]

    assert host == "127.0.0.1"
    assert listening  # gRPC listens on a dual-stack socket: v4-mapped 127.0.0.1
    for addr in listening:
        ip = ipaddress.ip_address(addr.ip)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        assert (mapped or ip) == ipaddress.ip_address("127.0.0.1")


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible
    peers: ClassVar[set[int]] = set()

    def do_GET(self) -> None:
        _Hello.peers.add(self.client_address[1])
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@contextmanager
def hello_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class SharedSession:
    """An async activity that keeps one aiohttp session across calls, as real clients do."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None
        self.loops: set[int] = set()

    async def fetch(self, path: str) -> str:
        self.loops.add(id(asyncio.get_running_loop()))
        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.get(f"{self.url}/{path}") as response:
            return await response.text()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def fetch_in_turn(context: Any) -> Generator[Any, Any, list[str]]:
    pages = []
    for page in range(context.get_input()):
        pages.append((yield context.call_activity("fetch", f"page-{page}")))
    return pages


def _loop_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ccexport-async")


def test_async_activities_share_one_loop_and_everything_stops_on_close() -> None:
    loop_threads = _loop_threads()
    with hello_server() as url:
        shared = SharedSession(url)
        local = LocalEngine(activity_concurrency=2)
        local.register_orchestrator("fetch_in_turn", fetch_in_turn)
        local.register_activity("fetch", shared.fetch)
        local.on_close(shared.close)
        with local:
            address = local.address
            state = local.run("fetch_in_turn", 6, timeout=TIMEOUT)
        assert shared.session is not None

    assert state.output == [f"/page-{n}" for n in range(6)]
    assert len(shared.loops) == 1  # one loop for every call, so the session stays usable
    assert len(_Hello.peers) == 1  # and its keep-alive connection was reused
    assert shared.session.closed  # closed by on_close, on that loop
    assert _loop_threads() == loop_threads  # its event loop thread ended
    assert address is not None
    host, port = address.rsplit(":", 1)
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0  # the sidecar is gone
