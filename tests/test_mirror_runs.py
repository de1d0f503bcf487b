"""Incremental runs and mirror mode end to end: the local Durable Task engine, the
function app's orchestrator and activities, the Constant Contact sandbox, run state in
a local CCEXPORT_HOME.

Each run reads a new Customer Insights run folder (as Customer Insights writes one
per run), so the state must be keyed by the export, not by the folder. The list is
checked against the segment after every run, member by member.
"""

from __future__ import annotations

import asyncio
import csv
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.pacing import Pacer
from shared.exports.definitions import ExportDefinition
from shared.runs.activities import RunServices
from shared.runs.contract import RunOptions, RunStatus
from shared.wiring import clients
from shared.workstation.local_run import LocalRunResult
from tests.support.ctct_support import FAST, SandboxTokens, run_cli
from tests.support.export_runs import connect, run_export
from tests.support.sandbox_service import RunningSandbox, cli_env

OPTIONS = RunOptions(max_body_bytes=8_000, poll_seconds=0.1, retry_seconds=0.2)
MAPPING = {"email": "Email", "first_name": "FirstName", "last_name": "LastName"}
TIMEOUT = 60.0
IMPORTS = "POST /v3/activities/contacts_json_import"
REMOVALS = "POST /v3/activities/remove_list_memberships"
EXPORTS = "POST /v3/activities/contact_exports"


def person(n: int) -> str:
    return f"person{n:03d}@example.com"


class Inbox:
    """Customer Insights run folders of one export and table, a new folder per run."""

    def __init__(self, root: Path, export: str = "BlobExport", table: str = "Subscribers") -> None:
        self.root, self.export, self.table = root, export, table
        self.runs = 0

    def drop(self, people: Sequence[int], names: dict[int, str] | None = None) -> str:
        self.runs += 1
        folder = self.root / self.export / self.table / "2026" / "11" / "28" / f"{self.runs:04d}"
        folder.mkdir(parents=True)
        with (folder / f"{self.table}_1.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["Email", "FirstName", "LastName"])
            for n in people:
                writer.writerow([person(n), (names or {}).get(n, f"First{n}"), f"Last{n}"])
        return str(folder)


@pytest.fixture
def home(tmp_path: Path, sandbox: RunningSandbox) -> Path:
    folder = tmp_path / "home"
    connect(sandbox, folder)
    return folder


@pytest.fixture
def services(home: Path, sandbox: RunningSandbox) -> RunServices:
    return replace(clients.run_services_from(cli_env(sandbox, home)), retry=FAST)


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    return Inbox(tmp_path / "inbox")


def run(services: RunServices, source: str, export: ExportDefinition, **options: Any) -> Any:
    return run_export(services, source, export, OPTIONS, **options)


def counted(sandbox: RunningSandbox, key: str) -> int:
    return sum(sandbox.requests(key).values())


class Calls:
    """What the sandbox was asked between two points of a test."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        self.sandbox = sandbox
        self.start = {k: counted(sandbox, k) for k in (IMPORTS, REMOVALS, EXPORTS)}

    def since(self, key: str) -> int:
        return counted(self.sandbox, key) - self.start[key]


def add_by_hand(sandbox: RunningSandbox, list_id: str, email: str) -> None:
    """A person adds a contact to the list (an import of one, as the web app does)."""

    async def add() -> None:
        async with ConstantContactClient(
            sandbox.api_base, SandboxTokens(sandbox), Pacer(100)
        ) as client:
            body = orjson.dumps(
                {"import_data": [{"email": email, "first_name": "Hand"}], "list_ids": [list_id]}
            )
            activity = await client.import_json(body)
            done = await client.wait_for(activity.activity_id, poll_interval=0.05)
            assert done.state == "completed"

    asyncio.run(add())


def changes(result: LocalRunResult) -> dict[str, Any]:
    assert result.report is not None
    found: dict[str, Any] = result.report["changes"]
    return found


@pytest.fixture
def mirror(sandbox: RunningSandbox) -> ExportDefinition:
    list_id = sandbox.create_list()
    return ExportDefinition(list_ids=(list_id,), mapping=MAPPING, name="subscribers", mode="mirror")


def test_three_runs_keep_the_list_equal_to_the_segment_and_the_hand_added_member(
    sandbox: RunningSandbox, services: RunServices, inbox: Inbox, mirror: ExportDefinition
) -> None:
    list_id = mirror.list_ids[0]
    other = ExportDefinition(list_ids=(list_id,), mapping=MAPPING, name="other-export")
    other_inbox = Inbox(inbox.root, table="Vip")

    first = run(services, inbox.drop(range(20)), mirror)

    assert first.outcome.status is RunStatus.COMPLETED
    assert sorted(sandbox.members(list_id)) == sorted(person(n) for n in range(20))
    assert changes(first)["added"] == 20
    # A person adds someone by hand; another export sends person 0 to the same list.
    add_by_hand(sandbox, list_id, "by.hand@example.com")
    assert run(services, other_inbox.drop([0]), other).outcome.status is RunStatus.COMPLETED

    # Second run: 0, 1 and 2 leave (0 stays for the other export), 20 and 21 join,
    # person 5 changed their name.
    calls = Calls(sandbox)
    second = run(services, inbox.drop(range(3, 22), names={5: "Renamed"}), mirror)

    assert second.outcome.status is RunStatus.COMPLETED
    expected = {person(n) for n in range(3, 22)} | {person(0), "by.hand@example.com"}
    assert set(sandbox.members(list_id)) == expected
    seen = changes(second)
    assert (seen["added"], seen["updated"], seen["unchanged"], seen["left"]) == (2, 1, 16, 3)
    assert seen["removed"] == 2
    report = second.report
    assert report is not None
    [plan] = report["removals"]["lists"]
    assert (plan["members"], plan["remove"], plan["kept_for_others"]) == (21, 2, 1)
    assert report["counts"]["contacts_sent"] == 3  # only the joiners and the renamed one
    assert report["counts"]["contacts_unchanged"] == 16
    assert calls.since(IMPORTS) == 1
    assert calls.since(EXPORTS) == 1  # the members found in bulk: one contact export
    assert calls.since(REMOVALS) == 1

    # Third run: 3 and 4 leave, 22 and 23 join, 6 changed name.
    third = run(services, inbox.drop([*range(5, 24)], names={5: "Renamed", 6: "New"}), mirror)

    assert third.outcome.status is RunStatus.COMPLETED
    segment = {person(n) for n in range(5, 24)}
    assert set(sandbox.members(list_id)) == segment | {person(0), "by.hand@example.com"}
    seen = changes(third)
    assert (seen["added"], seen["updated"], seen["removed"]) == (2, 1, 2)
    # The hand-added member and the other export's member were never this export's.
    state = services.runs.read_report(third.outcome.run_id)
    assert state is not None
    assert state["changes"]["state"]["managed"] == {list_id: 19 + 1}  # 0 is kept managed

    # The other export leaves person 0: now this export removes it (it added it).
    run(services, other_inbox.drop([]), replace(other, mode="mirror"), confirm_removals=True)
    fourth = run(services, inbox.drop(range(5, 24), names={5: "Renamed", 6: "New"}), mirror)

    assert set(sandbox.members(list_id)) == segment | {"by.hand@example.com"}
    assert changes(fourth)["removed"] == 1
    assert changes(fourth)["unchanged"] == 19


def test_an_unchanged_segment_sends_no_import(
    sandbox: RunningSandbox, services: RunServices, inbox: Inbox
) -> None:
    list_id = sandbox.create_list()
    export = ExportDefinition(list_ids=(list_id,), mapping=MAPPING, name="steady")
    run(services, inbox.drop(range(40)), export)
    calls = Calls(sandbox)

    again = run(services, inbox.drop(range(40)), export)  # the same rows, a new folder

    assert again.outcome.status is RunStatus.COMPLETED
    assert calls.since(IMPORTS) == 0
    seen = changes(again)
    assert seen["content_unchanged"] is True
    assert seen["unchanged"] == 40
    assert again.report is not None
    assert again.report["chunks"]["total"] == 0
    assert again.report["counts"]["contacts"] == again.report["counts"]["contacts_unchanged"] == 40

    # Rows in another order: read and compared, still nothing to send.
    reordered = run(services, inbox.drop(list(reversed(range(40)))), export)

    assert changes(reordered)["content_unchanged"] is False
    assert changes(reordered)["unchanged"] == 40
    assert calls.since(IMPORTS) == 0

    # --full sends everything again; a changed mapping makes every contact "changed".
    full = run(services, inbox.drop(range(40)), export, full=True)

    assert full.report is not None
    assert full.report["counts"]["contacts_sent"] == 40
    remapped = replace(export, mapping={"email": "Email", "first_name": "LastName"})
    moved = run(services, inbox.drop(range(40)), remapped)
    assert changes(moved)["incremental"] is False
    assert moved.report is not None
    assert moved.report["counts"]["contacts_sent"] == 40
    assert sorted(sandbox.members(list_id)) == sorted(person(n) for n in range(40))


def test_an_empty_file_stops_a_mirror_run_before_anything_is_removed(
    sandbox: RunningSandbox, services: RunServices, inbox: Inbox, mirror: ExportDefinition
) -> None:
    list_id = mirror.list_ids[0]
    run(services, inbox.drop(range(10)), mirror)
    add_by_hand(sandbox, list_id, "by.hand@example.com")
    calls = Calls(sandbox)

    empty = run(services, inbox.drop([]), mirror)

    assert empty.outcome.status is RunStatus.NEEDS_CONFIRMATION
    assert len(sandbox.members(list_id)) == 11
    assert calls.since(IMPORTS) == calls.since(REMOVALS) == 0
    assert empty.report is not None
    assert "segment is empty" in empty.report["removals"]["needs_confirmation"]
    assert empty.report["changes"]["state"]["written"] is False

    # Confirmed, under the same run id: the members it added go, the hand-added stays.
    confirmed = run(
        services, inbox.drop([]), mirror, run_id=empty.outcome.run_id, confirm_removals=True
    )

    assert confirmed.outcome.status is RunStatus.COMPLETED
    assert sandbox.members(list_id) == ["by.hand@example.com"]
    assert changes(confirmed)["removed"] == 10


def test_removing_too_large_a_share_asks_first_on_the_command_line(
    sandbox: RunningSandbox, home: Path, inbox: Inbox, tmp_path: Path
) -> None:
    list_id = sandbox.create_list()
    env = cli_env(sandbox, home)
    base = ["--list-id", list_id, "--map", "email=Email", "--mode", "mirror", "--json"]
    base += ["--poll-seconds", "0.1"]
    first = run_cli(["run", inbox.drop(range(10)), *base], env)
    assert first.returncode == 0, first.stderr

    # 3 of 10 leave: 30 % of the list, past the 20 % default.
    source = inbox.drop(range(3, 10))
    preview = run_cli(["prepare", source, "--out", str(tmp_path / "out"), *base[:-3]], env)
    assert preview.returncode == 0, preview.stderr
    assert "planned 3" in preview.stdout
    stopped = run_cli(["run", source, *base], env)

    assert stopped.returncode == 4, stopped.stderr
    report = orjson.loads(stopped.stdout)
    assert report["status"] == "needs_confirmation"
    assert "30%" in report["removals"]["needs_confirmation"]
    assert len(sandbox.members(list_id)) == 10

    allowed = run_cli(["run", source, *base, "--max-removal-share", "0.5"], env)

    assert allowed.returncode == 0, allowed.stderr
    assert sorted(sandbox.members(list_id)) == sorted(person(n) for n in range(3, 10))


def test_the_safety_stop_allows_exactly_the_limit_and_stops_one_over_on_the_command_line(
    sandbox: RunningSandbox, home: Path, inbox: Inbox
) -> None:
    list_id = sandbox.create_list()
    env = cli_env(sandbox, home)
    base = ["--list-id", list_id, "--map", "email=Email", "--mode", "mirror"]
    base += ["--poll-seconds", "0.1"]  # the default limit: max_removal_share 0.2
    first = run_cli(["run", inbox.drop(range(10)), *base], env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(sandbox.members(list_id)) == 10
    calls = Calls(sandbox)

    # One over: 3 of the 10 members leave (30 %; 2 is the most 20 % allows).
    over = run_cli(["run", inbox.drop(range(3, 10)), *base], env)

    assert over.returncode == 4, over.stdout + over.stderr
    report = orjson.loads(Path(over.stdout.strip().splitlines()[-1].split()[1]).read_bytes())
    assert report["status"] == "needs_confirmation"
    assert report["removals"]["lists"] == [
        {"list_id": list_id, "members": 10, "remove": 3, "kept_for_others": 0, "share": 0.3}
    ]
    why = report["removals"]["needs_confirmation"]
    assert why.startswith(
        f"this mirror run would remove 3 of the 10 members of list {list_id} (30%), more than "
        "the 20% allowed (max_removal_share)"
    )
    assert f"--run-id {report['run_id']} --confirm-removals" in why
    assert f"  NEEDS CONFIRMATION  {why}" in over.stdout.splitlines()
    assert report["counts"]["contacts_sent"] == 0
    assert calls.since(IMPORTS) == calls.since(REMOVALS) == 0
    assert len(sandbox.members(list_id)) == 10  # nothing removed

    # Exactly the limit: 2 of the 10 leave (20 %). Allowed: they are removed.
    at_limit = run_cli(["run", inbox.drop(range(2, 10)), *base, "--json"], env)

    assert at_limit.returncode == 0, at_limit.stdout + at_limit.stderr
    report = orjson.loads(at_limit.stdout)
    assert report["status"] == "completed"
    assert report["removals"]["lists"] == [
        {"list_id": list_id, "members": 10, "remove": 2, "kept_for_others": 0, "share": 0.2}
    ]
    assert report["removals"]["needs_confirmation"] is None
    assert report["changes"]["removed"] == 2
    assert sorted(sandbox.members(list_id)) == sorted(person(n) for n in range(2, 10))

    # A segment that came empty after a non-empty one stops, whatever the share allows.
    empty = run_cli(["run", inbox.drop([]), *base, "--max-removal-share", "1", "--json"], env)

    assert empty.returncode == 4, empty.stdout + empty.stderr
    report = orjson.loads(empty.stdout)
    assert report["status"] == "needs_confirmation"
    assert report["removals"]["needs_confirmation"].startswith(
        "the segment is empty but the last run sent 8 contacts: in mirror mode this would "
        "remove every member this export added."
    )
    assert len(sandbox.members(list_id)) == 8


def test_the_state_lives_in_blob_storage_when_runs_do(
    sandbox: RunningSandbox, home: Path, azurite: str, tmp_path: Path
) -> None:
    services = replace(
        clients.run_services_from(
            cli_env(sandbox, home, CCEXPORT_STORAGE_CONNECTION_STRING=azurite)
        ),
        retry=FAST,
    )
    assert services.blob_service is not None
    inbox = services.blob_service.get_container_client("inbox")
    if not inbox.exists():
        inbox.create_container()
    local = Inbox(tmp_path / "drops")
    prefix = f"mirror-{uuid.uuid4().hex[:8]}"

    def upload(folder: str) -> str:
        path = Path(folder)
        name = f"{prefix}/{path.relative_to(local.root).as_posix()}"
        for part in path.glob("*.csv"):
            inbox.upload_blob(f"{name}/{part.name}", part.read_bytes(), overwrite=True)
        return f"az://inbox/{name}"

    list_id = sandbox.create_list()
    export = ExportDefinition(list_ids=(list_id,), mapping=MAPPING, name=prefix, mode="mirror")
    run(services, upload(local.drop(range(12))), export)
    calls = Calls(sandbox)

    again = run(services, upload(local.drop(range(1, 12))), export)  # one leaves

    assert again.outcome.status is RunStatus.COMPLETED
    assert sorted(sandbox.members(list_id)) == sorted(person(n) for n in range(1, 12))
    assert (calls.since(IMPORTS), calls.since(REMOVALS)) == (0, 1)
    state = changes(again)["state"]
    assert state["written"] is True
    assert state["where"].startswith("az://reports/_state/")
    reports = services.blob_service.get_container_client("reports")
    assert reports.get_blob_client(state["where"].removeprefix("az://reports/")).exists()
