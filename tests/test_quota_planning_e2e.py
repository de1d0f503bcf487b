"""The daily quota, planned, end to end: the function app's orchestrator and activities on
the local Durable Task engine, the Constant Contact sandbox, the API key's pacing record
in a file under CCEXPORT_HOME.

A run whose key has nearly used its day waits instead of sending, and sends when the
day turns. The day is not waited for: the run's pacer is given :class:`MidnightClock`
as its wall clock (``Pacer(wall_clock=...)``), which reads a few seconds before 00:00
UTC when the run first asks about the key's day and runs on with real time, so the
reset comes seconds later. The orchestrator times its wait by the seconds that clock
had left to the reset (``KeyDay.resets_in``), so its own clock (the engine's, real
time) needs no faking.

Then the estimate against what runs sent, on a small run, a mirror run and a run
whose first import was answered 503: each prints its figures (``pytest -s``).
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.sample import EXPORT, RUN, TABLE
from shared.config import Config
from shared.constant_contact.pacing import PACING_MARGIN, Pacer, PaceState
from shared.exports.definitions import ExportDefinition
from shared.runs.activities import RunActivities, RunServices
from shared.runs.contract import ORCHESTRATOR, RunOptions, RunStatus
from shared.wiring import clients
from shared.workstation.local_engine import RunState, RuntimeStatus
from shared.workstation.local_run import LocalRunResult, app_engine, run_locally
from tests.support.export_runs import (
    BODY_BYTES,
    TIMEOUT,
    connect,
    env_for,
    run_export,
    run_input,
    services_for,
    write_export_sample,
)
from tests.support.sample_emails import expected_emails
from tests.support.sandbox_service import RunningSandbox

DAY = "2026-11-28"
NEXT_DAY = "2026-11-29"
QUOTA = 10_000
USED = QUOTA - 2
"""What the key's record holds for DAY when the run asks: too little for any run."""


class MidnightClock:
    """A wall clock that reads ``before`` seconds before the end of ``day`` (UTC) the
    first time it is read, and runs on with real time from there.

    The run's pacer is its first reader: prepare does not pace, so that first read is
    the run's look at the key's day, whenever prepare ends.
    """

    def __init__(self, day: str, before: float) -> None:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
        self.midnight = start + 86_400
        self.before = before
        self._offset: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            now = time.time()
            if self._offset is None:
                self._offset = self.midnight - self.before - now
            return now + self._offset


def connected(sandbox: RunningSandbox, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A new list in the sandbox, and the environment of a home whose connection holds
    the sandbox's tokens (local files, no storage connection)."""
    home = tmp_path / "home"
    connect(sandbox, home)
    return sandbox.create_list(), env_for(sandbox, home, None)


def sample_folder(root: Path) -> str:
    write_export_sample(root)
    return str(root / EXPORT / TABLE / RUN)


def key_record_path(env: dict[str, str]) -> Path:
    """The file the key's pacing record is, as every command of CCEXPORT_HOME finds it."""
    config = Config.from_mapping(env)
    place, _ = clients.pacing_record(config, f"ctct-pace-{config.ctct.client_id}")
    return Path(place)


def nearly_used(env: dict[str, str], clock: Callable[[], float]) -> Pacer:
    """The run's pacer on the key's record, which already counts USED requests on DAY."""
    config = Config.from_mapping(env)
    _, open_record = clients.pacing_record(config, f"ctct-pace-{config.ctct.client_id}")
    record = open_record()
    record.update(lambda _old: PaceState(0.0, 0.0, DAY, USED).encode())
    rate = config.ctct.requests_per_second * PACING_MARGIN
    return Pacer(rate, record=record, wall_clock=clock)


def test_a_run_the_day_cannot_carry_waits_for_the_reset_then_delivers_everything(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    list_id, env = connected(sandbox, tmp_path)
    clock = MidnightClock(DAY, before=3.0)
    services = replace(services_for(env), pacer=nearly_used(env, clock))
    source = sample_folder(tmp_path / "sample")
    waiting: list[tuple[dict[str, Any], int, float]] = []

    def watch(status: dict[str, Any]) -> None:
        if status.get("phase") == "waiting_for_quota" and not waiting:
            waiting.append((status, len(sandbox.members(list_id)), time.time()))

    result = run_locally(
        run_input(source, list_id), RunActivities(services), timeout=TIMEOUT, on_progress=watch
    )

    [(status, members_then, seen_at)] = waiting
    assert members_then == 0  # nothing sent while it waited
    resumes_at = datetime.fromisoformat(status["resumes_at"].replace("Z", "+00:00"))
    assert 0 < resumes_at.timestamp() - seen_at <= 3.0 + 1.5  # the reset, on the engine's clock
    assert status["requests_estimated"] > 2
    assert result.outcome.status is RunStatus.COMPLETED
    assert sorted(sandbox.members(list_id)) == sorted(expected_emails(tmp_path / "sample"))
    report = result.report
    assert report is not None
    plan = report["quota_plan"]
    assert plan["waits"] == 1
    assert plan["key_day"]["day"] == NEXT_DAY
    assert plan["key_day"]["left"] == QUOTA
    requests = report["requests"]
    assert requests["estimated"] == status["requests_estimated"]
    assert 0 < requests["total"] <= requests["estimated"]
    # the key's record counted the run's requests on the new day, as the run did
    day = PaceState.parse(key_record_path(env).read_bytes())
    assert (day.day, day.used) == (NEXT_DAY, requests["total"])


def test_a_run_waiting_for_the_quota_can_be_terminated_and_sends_nothing(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    list_id, env = connected(sandbox, tmp_path)
    services = replace(services_for(env), pacer=nearly_used(env, MidnightClock(DAY, before=3600)))
    run = run_input(sample_folder(tmp_path / "sample"), list_id)
    activities = RunActivities(services)
    engine = app_engine(activity_concurrency=run.options.upload_window + 1, activities=activities)
    engine.on_close(activities.aclose)
    waited: list[dict[str, Any]] = []

    with engine:
        started = engine.start(ORCHESTRATOR, run.to_json(), instance_id=run.run_id)

        def stop_when_waiting(state: RunState) -> None:
            custom = state.custom_status or {}
            if custom.get("phase") == "waiting_for_quota" and not waited:
                waited.append(custom)
                engine.client.terminate_orchestration(started.instance_id, output="cancelled")

        state = engine.wait(started.instance_id, TIMEOUT, on_progress=stop_when_waiting)

    assert state.status is RuntimeStatus.TERMINATED
    [status] = waited
    resumes_at = datetime.fromisoformat(status["resumes_at"].replace("Z", "+00:00"))
    assert resumes_at.timestamp() - time.time() > 3000  # an hour's wait, cut short
    assert sandbox.members(list_id) == []
    assert sandbox.imports(list_id) == []
    assert PaceState.parse(key_record_path(env).read_bytes()).used == USED  # nothing counted


# --- the estimate against what runs sent --------------------------------------------


def figures(
    name: str, result: LocalRunResult, env: dict[str, str], *, before: int = 0
) -> dict[str, Any]:
    """The report's requests, checked against the key's record (which counted ``before``
    when the run started), and printed."""
    report = result.report
    assert report is not None
    requests = report["requests"]
    counted = clients.key_usage(Config.from_mapping(env)).used - before
    assert requests["total"] == counted  # every request the run made, as the pacer let them
    estimate = requests["estimate"]
    print(
        f"\n{name}: estimated {requests['estimated']} ({estimate}), sent {requests['total']} "
        f"(imports {requests['import_requests']}, poll requests {requests['poll_requests']}, "
        f"members {requests['member_requests']}, removals {requests['removal_requests']}, "
        f"removal polls {requests['removal_poll_requests']})"
    )
    return dict(requests)


def test_a_small_run_sends_no_more_than_its_estimate(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    list_id, env = connected(sandbox, tmp_path)
    source = sample_folder(tmp_path / "sample")

    result = run_locally(
        run_input(source, list_id), RunActivities(services_for(env)), timeout=TIMEOUT
    )

    assert result.outcome.status is RunStatus.COMPLETED
    requests = figures("small run", result, env)
    assert requests["estimate"]["imports"] == requests["import_requests"] == 4
    assert requests["total"] <= requests["estimated"]


def test_a_503_answered_import_is_sent_again_beyond_the_estimate(
    sandbox_factory: Callable[..., RunningSandbox], tmp_path: Path
) -> None:
    sandbox = sandbox_factory(rate_limit=0, daily_quota=0, token_rate_limit=0, activity_delay=0)
    list_id, env = connected(sandbox, tmp_path)
    source = sample_folder(tmp_path / "sample")
    sandbox.faults(http_503={"rate": 1, "count": 1})  # the run's first request: an import

    result = run_locally(
        run_input(source, list_id), RunActivities(services_for(env)), timeout=TIMEOUT
    )

    assert result.outcome.status is RunStatus.COMPLETED
    requests = figures("503 retried", result, env)
    assert requests["import_requests"] == requests["estimate"]["imports"] + 1
    assert requests["import_resends"] == 1
    counted_by_sandbox = sum(
        sum(statuses.values()) for statuses in sandbox.stats()["requests"].values()
    )
    assert requests["total"] == counted_by_sandbox


def person(n: int) -> str:
    return f"person{n:03d}@example.com"


def drop(root: Path, people: Sequence[int]) -> str:
    """A Customer Insights run folder of ``people``, a new one each time."""
    runs = len(list(root.glob("*"))) + 1
    folder = root / f"{runs:04d}"
    folder.mkdir(parents=True)
    with (folder / "Subscribers_1.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Email", "FirstName"])
        for n in people:
            writer.writerow([person(n), f"First{n}"])
    return str(folder)


def test_a_mirror_run_counts_its_reads_and_removals(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    list_id, env = connected(sandbox, tmp_path)
    services: RunServices = services_for(env)
    mirror = ExportDefinition(
        list_ids=(list_id,), mapping={"email": "Email", "first_name": "FirstName"},
        name="mirrored", mode="mirror",
    )  # fmt: skip
    options = RunOptions(max_body_bytes=BODY_BYTES, poll_seconds=0.1, retry_seconds=0.2)
    inbox = tmp_path / "inbox" / "BlobExport" / "Subscribers" / "2026" / "11" / "28"
    first = run_export(services, drop(inbox, range(40)), mirror, options)
    assert first.outcome.status is RunStatus.COMPLETED
    before = clients.key_usage(Config.from_mapping(env)).used

    second = run_export(
        services, drop(inbox, [*range(30), *range(40, 45)]), mirror, options, confirm_removals=True
    )

    assert second.outcome.status is RunStatus.COMPLETED
    assert sorted(sandbox.members(list_id)) == sorted(
        person(n) for n in [*range(30), *range(40, 45)]
    )
    report = second.report
    assert report is not None
    requests = report["requests"]
    assert requests["member_requests"] == requests["estimate"]["members"] > 0
    assert requests["removal_requests"] == requests["estimate"]["removals"] == 1
    assert requests["total"] <= requests["estimated"]
    figures("mirror run", second, env, before=before)
