"""``ccexport serve`` over HTTP: the app's own routes, runs on the local engine, the
inbox and the timer, sign-in as App Service authentication does it, a clean stop.

Each test starts serve as a child process (``--port 0``) against the Constant Contact
sandbox and talks to it only through 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.storage.blob import BlobServiceClient

from bench.sample import EXPORT, RUN, TABLE, SampleCounts, write_sample
from shared.workstation.serve.http import Principal
from tests.support.function_harness import AppEnv
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.serve_service import RunningServe, running_serve
from tests.support.services import ServiceError

ROWS = 600
RUN_TIMEOUT = 90.0
CONNECTION = "crm"
FIRST_RUN = f"{EXPORT}/{TABLE}/{RUN}"
LATER_RUN = f"{EXPORT}/{TABLE}/2026/11/29/0930"
FAST_POLLS = {"RUN_POLL_SECONDS": "0.5"}


def sample(where: Path) -> SampleCounts:
    """A Customer Insights export with one run folder, written under ``where``."""
    return write_sample(where, ROWS, bad_every=50, duplicate_every=0)


def copy_run(sample_root: Path, inbox: Path, run_folder: str) -> None:
    """The sample's export (model.json, then its parts) as ``run_folder`` in ``inbox``."""
    target = inbox / run_folder
    target.mkdir(parents=True, exist_ok=True)
    for part in sorted((sample_root / FIRST_RUN).iterdir()):
        shutil.copyfile(part, target / part.name)
    time.sleep(1.05)  # model.json strictly later than the parts, as Customer Insights writes
    shutil.copyfile(sample_root / EXPORT / "model.json", inbox / EXPORT / "model.json")


def serve_env(sandbox: RunningSandbox, home: Path, **extra: str) -> dict[str, str]:
    """The sandbox's imports end in well under a second (or in ``activity_delay``), so
    runs poll for them after half a second rather than the default 10 s."""
    return cli_env(sandbox, home, **{"RUN_QUIET_SECONDS": "0", **FAST_POLLS, **extra})


def forged_admin() -> str:
    doc = {"auth_typ": "aad", "claims": [{"typ": "roles", "val": "admin"}]}
    return base64.b64encode(json.dumps(doc).encode()).decode()


class Client:
    """The HTTP API of one serve, as a person's script would call it."""

    def __init__(self, session: aiohttp.ClientSession, serve: RunningServe) -> None:
        self.session = session
        self.serve = serve

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        url = path if path.startswith("http") else f"{self.serve.api}/{path}"
        async with self.session.request(method, url, json=body, **kw) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def connect(self, name: str = CONNECTION) -> dict[str, Any]:
        """Create the connection with consent, and connect it through the OAuth redirects."""
        status, _ = await self.call(
            "PUT",
            f"connections/{name}",
            {"display_name": "CRM", "roles": ["marketing"], "privacy_consent": {"accepted": True}},
        )
        assert status == 201
        # connect → the sandbox's authorize page → serve's callback page, all followed
        async with self.session.get(f"{self.serve.api}/connections/{name}/connect") as done:
            page = await done.text()
            assert (done.status, done.content_type) == (200, "text/html"), page
        assert f"now connected as &#x27;{name}&#x27;" in page
        status, connection = await self.call("GET", f"connections/{name}")
        assert status == 200
        return dict(connection)

    async def define(self, list_id: str, name: str = "high-value") -> None:
        definition = {
            "connection": CONNECTION,
            "list_ids": [list_id],
            "mapping": {"email": "PrimaryEmail", "first_name": "FirstName"},
            "segments": [{"export": EXPORT, "table": TABLE}],
        }
        status, saved = await self.call("PUT", f"exports/{name}", definition)
        assert status == 201, saved

    async def wait_for(self, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            status, run = await self.call("GET", f"runs/{run_id}")
            assert status == 200, run
            if run["runtime_status"] in {"Completed", "Failed", "Terminated"}:
                return dict(run)
            await asyncio.sleep(0.3)
        raise AssertionError(f"run {run_id} did not end in {RUN_TIMEOUT:.0f}s")

    async def runs(self, export: str = "high-value") -> list[dict[str, Any]]:
        status, found = await self.call("GET", "runs", params={"export": export})
        assert status == 200
        return list(found["runs"])

    async def run_started_by(self, trigger: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            for run in await self.runs():
                if run["trigger"] == trigger:
                    return run
            await asyncio.sleep(0.3)
        raise AssertionError(f"no run started by the {trigger} within {RUN_TIMEOUT:.0f}s")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        yield client


@pytest.fixture
def samples(tmp_path: Path) -> tuple[Path, SampleCounts]:
    root = tmp_path / "sample"
    return root, sample(root)


@pytest.fixture
def served(
    sandbox: RunningSandbox, tmp_path: Path, samples: tuple[Path, SampleCounts]
) -> Iterator[RunningServe]:
    """serve with an inbox folder that already holds FIRST_RUN (so no event raised it)."""
    inbox = tmp_path / "inbox"
    copy_run(samples[0], inbox, FIRST_RUN)
    env = serve_env(sandbox, tmp_path / "home")
    try:
        with running_serve(
            env, "--inbox", str(inbox), "--no-timer", log=tmp_path / "serve.log"
        ) as serve:
            yield serve
    except ServiceError as exc:
        pytest.fail(str(exc))


def assert_report_accounts(report: dict[str, Any], counts: SampleCounts) -> None:
    got = report["counts"]
    assert got["rows_read"] == counts.rows
    assert got["rejected"] == counts.bad
    assert got["contacts"] == counts.contacts
    assert got["contacts_delivered"] == counts.contacts
    assert report["status"] == "completed"


async def test_a_run_started_over_http_completes_and_shows_its_report(
    served: RunningServe,
    session: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    samples: tuple[Path, SampleCounts],
    tmp_path: Path,
) -> None:
    api = Client(session, served)
    assert served.line("inbox ") == (
        f"inbox {tmp_path / 'inbox'} (3 files there now; new run folders start runs)"
    )
    connection = await api.connect()
    # Every request is signed in as serve's principal: consent names local-admin's id.
    assert connection["privacy_consent"]["accepted_by"] == Principal("local-admin", ()).object_id
    list_id = sandbox.create_list()
    await api.define(list_id)
    assert await api.runs() == []  # files already there raise no event

    async with session.post(
        f"{served.api}/exports/high-value/runs", json={"folder": FIRST_RUN}
    ) as started:
        assert started.status == 202
        raw = await started.read()
        location = started.headers["Location"]
    links = json.loads(raw)
    run_id = links["id"]
    # The app's own status route, as in Azure: never Durable's management URLs.
    assert location == links["status_url"] == f"/api/runs/{run_id}"
    for leak in (b"code=", b"durabletask", b"runtime/webhooks"):
        assert leak not in raw + location.encode()

    run = await api.wait_for(run_id)
    status = await api.call("GET", f"{served.origin}{location}")
    assert status == (200, run)
    assert run["export"] == "high-value"
    assert run["custom_status"]["phase"] == "done"
    assert_report_accounts(run["report"], samples[1])
    assert len(sandbox.members(list_id)) == samples[1].contacts

    again, body = await api.call("POST", "exports/high-value/runs", {"folder": FIRST_RUN})
    assert again == 409
    assert "was already sent" in body["error"]
    unknown, _ = await api.call("GET", "runs/high-value.0123456789abcdef0123456789abcdef")
    assert unknown == 404
    nowhere = await api.call("GET", "no/such/route")
    assert nowhere == (404, {"error": "no function serves GET /api/no/such/route"})
    assert "Traceback" not in served.log_text()


async def test_a_run_folder_dropped_into_the_inbox_starts_its_run(
    served: RunningServe,
    session: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    samples: tuple[Path, SampleCounts],
    tmp_path: Path,
) -> None:
    api = Client(session, served)
    await api.connect()
    list_id = sandbox.create_list()
    await api.define(list_id)
    copy_run(samples[0], tmp_path / "inbox", LATER_RUN)

    started = await api.run_started_by("blob")
    assert started["source"] == str((tmp_path / "inbox" / LATER_RUN).resolve())
    run = await api.wait_for(started["run_id"])
    assert_report_accounts(run["report"], samples[1])
    assert len(sandbox.members(list_id)) == samples[1].contacts
    # One run for the folder, however many of its files raised events.
    assert [r["run_id"] for r in await api.runs()] == [started["run_id"]]


async def test_the_timer_starts_the_newest_complete_folder(
    sandbox: RunningSandbox,
    session: aiohttp.ClientSession,
    samples: tuple[Path, SampleCounts],
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    copy_run(samples[0], inbox, FIRST_RUN)
    env = serve_env(sandbox, tmp_path / "home", EXPORT_SCHEDULE="*/2 * * * * *")
    with running_serve(env, "--inbox", str(inbox), log=tmp_path / "serve.log") as serve:
        assert serve.line("timer scheduled_refresh '*/2 * * * * *', next at ")
        api = Client(session, serve)
        await api.connect()
        list_id = sandbox.create_list()
        await api.define(list_id)
        started = await api.run_started_by("timer")
        run = await api.wait_for(started["run_id"])
        assert_report_accounts(run["report"], samples[1])
        await asyncio.sleep(2.5)  # later ticks find the folder done and start nothing
        assert len(await api.runs()) == 1


async def test_callers_are_who_serve_says_and_forged_principals_are_dropped(
    sandbox: RunningSandbox, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = serve_env(sandbox, home)
    with running_serve(env, "--no-timer", log=tmp_path / "admin.log") as admin:
        api = Client(session, admin)
        await api.connect()
        status, _ = await api.call(
            "PUT",
            "connections/sales",
            {"display_name": "Sales", "roles": ["sales"], "privacy_consent": {"accepted": True}},
        )
        assert status == 201
    forged = {"X-MS-Client-Principal": forged_admin(), "x-ms-client-principal-ID": "someone"}
    with running_serve(
        env, "--no-timer", "--user", "ana", "--role", "marketing", log=tmp_path / "ana.log"
    ) as ana:
        assert ana.line("signed in as ") == "signed in as ana (marketing)"
        api = Client(session, ana)
        status, found = await api.call("GET", "connections", headers=forged)
        assert status == 200
        assert [c["name"] for c in found["connections"]] == [CONNECTION]  # not "sales"
        refused, body = await api.call(
            "PUT",
            "connections/mine",
            {"display_name": "x", "roles": ["marketing"]},
            headers=forged,
        )
        assert refused == 403
        assert body == {"error": "only an admin may create or change connections"}
        hidden, _ = await api.call("GET", "connections/sales", headers=forged)
        assert hidden == 404
        assert (await api.call("GET", f"connections/{CONNECTION}/connect"))[0] == 403


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_cleanly(sandbox: RunningSandbox, tmp_path: Path, sig: int) -> None:
    env = serve_env(sandbox, tmp_path / "home")
    with running_serve(env, "--no-timer", log=tmp_path / "serve.log") as serve:
        assert serve.stop(sig) == 0
    assert "Traceback" not in serve.log_text()
    assert "stopping: nothing new starts" in serve.log_text()


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        ((), {"EXPORT_SCHEDULE": "every day"}, "the schedule 'every day' is not an NCRONTAB"),
        (("--inbox", "x"), {"CCEXPORT_STORAGE": "UseDevelopmentStorage=true"}, "--inbox is for"),
        (("--port", "70000"), {}, "--port must be from 0 to 65535"),
    ],
)
def test_bad_settings_are_one_line_errors(
    sandbox: RunningSandbox,
    tmp_path: Path,
    args: tuple[str, ...],
    extra: dict[str, str],
    message: str,
) -> None:
    import subprocess  # noqa: PLC0415

    from tests.support.ctct_support import run_cli  # noqa: PLC0415

    env = serve_env(sandbox, tmp_path / "home", **extra)
    done = run_cli(["serve", "--port", "0", *args], env, timeout=60)
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ccexport serve: error: ")
    assert message in lines[0]


@pytest.mark.azurite
async def test_with_a_storage_connection_the_inbox_is_the_container(
    app_env: AppEnv,
    sandbox: RunningSandbox,
    session: aiohttp.ClientSession,
    samples: tuple[Path, SampleCounts],
    tmp_path: Path,
) -> None:
    env = serve_env(sandbox, tmp_path / "home", **app_env.settings(RUN_QUIET_SECONDS="0"))
    with running_serve(env, "--no-timer", log=tmp_path / "serve.log") as serve:
        assert serve.line("inbox ").startswith(f"inbox container {app_env.inbox} (0 files")
        api = Client(session, serve)
        await api.connect()
        list_id = sandbox.create_list()
        await api.define(list_id)
        inbox = BlobServiceClient.from_connection_string(app_env.connection_string)
        container = inbox.get_container_client(app_env.inbox)
        for part in sorted((samples[0] / FIRST_RUN).iterdir()):
            container.upload_blob(f"{FIRST_RUN}/{part.name}", part.read_bytes())
        app_env.write_later(
            f"{EXPORT}/model.json", (samples[0] / EXPORT / "model.json").read_bytes()
        )

        started = await api.run_started_by("blob")
        assert started["source"] == f"az://{app_env.inbox}/{FIRST_RUN}"
        run = await api.wait_for(started["run_id"])
        assert_report_accounts(run["report"], samples[1])
        assert len(sandbox.members(list_id)) == samples[1].contacts
        reports = app_env.container(app_env.reports)
        assert any(started["run_id"] in b.name for b in reports.list_blobs())


async def test_a_stop_lets_the_run_in_flight_finish_within_the_grace(
    sandbox_factory: Any,
    session: aiohttp.ClientSession,
    samples: tuple[Path, SampleCounts],
    tmp_path: Path,
) -> None:
    slow = sandbox_factory(
        rate_limit=0, daily_quota=0, token_rate_limit=0, activity_delay=3, import_rate=5000
    )
    inbox, home = tmp_path / "inbox", tmp_path / "home"
    copy_run(samples[0], inbox, FIRST_RUN)
    env = serve_env(slow, home)
    with running_serve(
        env, "--inbox", str(inbox), "--no-timer", "--grace", "60", log=tmp_path / "serve.log"
    ) as serve:
        api = Client(session, serve)
        await api.connect()
        list_id = slow.create_list()
        await api.define(list_id)
        status, started = await api.call("POST", "exports/high-value/runs", {"folder": FIRST_RUN})
        assert status == 202
        run_id = started["id"]
        while (await api.call("GET", f"runs/{run_id}"))[1]["custom_status"] is None:
            await asyncio.sleep(0.1)
        assert (await api.call("GET", f"runs/{run_id}"))[1]["runtime_status"] == "Running"
        assert serve.stop(signal.SIGTERM) == 0  # the import is still being processed
    assert "Traceback" not in serve.log_text()
    assert "still running were stopped" not in serve.log_text()
    report = json.loads((home / "runs" / run_id / "report.json").read_text())
    assert_report_accounts(report, samples[1])
    assert len(slow.members(list_id)) == samples[1].contacts


async def test_only_this_machines_programs_reach_serve_and_only_by_declared_methods(
    served: RunningServe, session: aiohttp.ClientSession
) -> None:
    api = Client(session, served)
    body = {"display_name": "x", "roles": [], "privacy_consent": {"accepted": True}}
    cross_site = [
        {"Origin": "https://pages.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
    ]
    for headers in cross_site:
        status, answer = await api.call("PUT", "connections/evil", body, headers=headers)
        assert (status, answer) == (403, {"error": "requests from other sites are refused"})
    start = f"{served.origin}/runtime/webhooks/durabletask/orchestrators/segment_export/x1"
    assert (await api.call("POST", start, {}, headers=cross_site[0]))[0] == 403
    rebound = await api.call("GET", "connections", headers={"Host": f"evil.example:{served.port}"})
    assert rebound == (
        421,
        {"error": "serve answers only at its own address (127.0.0.1 or localhost)"},
    )
    async with session.head(f"{served.api}/connections/viahead", data=b"{}") as head:
        assert head.status == 405
    same_site = {"Origin": served.origin, "Sec-Fetch-Site": "same-origin"}
    assert (await api.call("GET", "connections", headers=same_site))[0] == 200
    assert (await api.call("GET", "connections/evil"))[0] == 404  # nothing was created
    assert (await api.call("GET", "connections/viahead"))[0] == 404
    joined = await api.call("GET", "runs", params=[("limit", "abc"), ("limit", "5")])
    assert joined[0] == 400  # repeated values reach the function joined ("abc,5"), as in Azure


async def test_serve_s_durable_webhooks_manage_a_run(
    sandbox_factory: Any,
    session: aiohttp.ClientSession,
    samples: tuple[Path, SampleCounts],
    tmp_path: Path,
) -> None:
    slow = sandbox_factory(rate_limit=0, daily_quota=0, token_rate_limit=0, activity_delay=30)
    inbox = tmp_path / "inbox"
    copy_run(samples[0], inbox, FIRST_RUN)
    env = serve_env(slow, tmp_path / "home")
    with running_serve(env, "--inbox", str(inbox), "--no-timer", log=tmp_path / "s.log") as serve:
        api = Client(session, serve)
        await api.connect()
        await api.define(slow.create_list())
        status, started = await api.call("POST", "exports/high-value/runs", {"folder": FIRST_RUN})
        assert status == 202
        instance = f"{serve.origin}/runtime/webhooks/durabletask/instances/{started['id']}"
        running = await api.call("GET", instance)
        assert running[0] == 202
        assert running[1]["createdTime"].endswith("+00:00")
        assert (await api.call("DELETE", instance))[0] == 409
        assert (await api.call("POST", f"{instance}/rewind?reason=why"))[0] == 501
        terminate = f"{instance}/terminate?reason=enough"
        assert (await api.call("POST", terminate))[0] == 202
        ended = await api.wait_for(started["id"])
        assert ended["runtime_status"] == "Terminated"
        assert (await api.call("POST", terminate))[0] == 410
        assert (await api.call("DELETE", instance)) == (200, {"instancesDeleted": 1})
        assert (await api.call("GET", instance))[0] == 404
        bad = f"{serve.origin}/runtime/webhooks/durabletask/orchestrators/segment_export/x2"
        async with session.post(bad, data=b"{not json") as answer:
            assert answer.status == 400


def test_unreachable_storage_is_one_line_and_quick(sandbox: RunningSandbox, tmp_path: Path) -> None:
    from tests.support.ctct_support import run_cli  # noqa: PLC0415
    from tests.support.services import free_port  # noqa: PLC0415

    closed = free_port()
    storage = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"BlobEndpoint=http://127.0.0.1:{closed}/devstoreaccount1;"
    )
    env = serve_env(sandbox, tmp_path / "home", CCEXPORT_STORAGE=storage)
    began = time.monotonic()
    done = run_cli(["serve", "--port", "0"], env, timeout=60)
    assert time.monotonic() - began < 30
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(
        "ccexport serve: error: the storage account (container 'inbox') cannot be reached"
    )
    assert len(done.stderr.strip().splitlines()) == 1


async def test_a_run_whose_imports_all_fail_shows_as_failed(
    served: RunningServe, session: aiohttp.ClientSession, sandbox: RunningSandbox
) -> None:
    """A run that delivered nothing is ``failed`` in the app's own status route (its
    report, its custom status), whatever Durable's runtime status says of the
    orchestration: the orchestrator ends normally after writing the report."""
    api = Client(session, served)
    await api.connect()
    await api.define(sandbox.create_list())
    sandbox.faults(import_failed={"rate": 1, "count": 1_000})  # every import fails
    try:
        started, links = await api.call("POST", "exports/high-value/runs", {"folder": FIRST_RUN})
        assert started == 202, links
        run = await api.wait_for(links["id"])
    finally:
        sandbox.faults(import_failed={"rate": 0, "count": 0})
    assert run["status"] == "failed", run
    assert run["runtime_status"] == "Completed"  # it ended, after writing its report
    assert run["custom_status"]["status"] == run["report"]["status"] == "failed"
    assert run["report"]["counts"]["contacts_delivered"] == 0
    assert run["report"]["counts"]["contacts_not_delivered"] > 0
    listed = {r["run_id"]: r for r in await api.runs()}
    assert listed[links["id"]]["status"] == "failed"
