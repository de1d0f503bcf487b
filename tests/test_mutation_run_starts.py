"""Each run started at most once (shared/runs/launcher.py Launcher.start, run_now), with an
engine, an inbox and a clock of its own: the run id is the run key of the folder and
the definition, a run running or done is not started again (unless a person asks),
a start the engine refused because another delivery won is "already running", and
what cannot start is said, not retried. The catalog and the run index are the local
folder kind the command line uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.config import AppSettings
from shared.errors import ConfigError, InputError, ReauthorizationRequired
from shared.exports.catalog import Catalog, Connection, ConnectionStatus, PrivacyConsent
from shared.exports.definitions import ExportDefinition, SegmentMatch
from shared.runs.contract import RunInput, RunOptions
from shared.runs.grants import RunGrant
from shared.runs.index import RunIndex, RunRecord
from shared.runs.launcher import (
    ACTIVE,
    Launcher,
    NotReady,
    Outcome,
    RunStart,
    run_input,
)
from shared.segments.inbox import BlobInfo, Listing, RunFolder, run_key
from shared.storage.documents import FolderDocuments

NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)
QUIET = 300.0
LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
MAPPING = {"email": "Email"}
SOURCE = "az://inbox/HighValue/Contacts/2026/03/04/1100"


class MemoryInbox(Listing):
    """An inbox listing held in memory: names, ETags and times."""

    def __init__(self, blobs: Iterable[BlobInfo] = ()) -> None:
        self.blobs = list(blobs)

    @property
    def name(self) -> str:
        return "inbox"

    async def list_files(self, prefix: str = "") -> list[BlobInfo]:
        return [b for b in self.blobs if b.name.startswith(prefix)]

    async def model(self, export_folder: str) -> BlobInfo | None:
        wanted = f"{export_folder}/model.json"
        return next((b for b in self.blobs if b.name == wanted), None)


class Engine:
    """An orchestration engine: instances by id, and what was asked of it."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.started: list[tuple[str, dict[str, Any]]] = []
        self.refuse_with: str | None = None  # start raises; the instance is left in this state

    async def runtime_status(self, run_id: str) -> str | None:
        return self.status.get(run_id)

    async def output(self, run_id: str) -> dict[str, Any] | None:
        return self.outputs.get(run_id)

    async def start(self, run_id: str, run_input: dict[str, Any]) -> None:
        if self.refuse_with is not None:
            self.status[run_id] = self.refuse_with
            raise RuntimeError("an instance with this id exists")
        self.started.append((run_id, run_input))
        self.status[run_id] = "Pending"


def part(path: str, etag: str, minutes_ago: float = 60) -> BlobInfo:
    return BlobInfo(path, etag, NOW - timedelta(minutes=minutes_ago))


def folder(stamp: str = "2026/03/04/1100", *etags: str) -> RunFolder:
    parts = tuple(
        part(f"HighValue/Contacts/{stamp}/Contacts_{i}.csv", etag)
        for i, etag in enumerate(etags or ('"0x1"',), 1)
    )
    return RunFolder("inbox", "", "HighValue", "Contacts", stamp, parts)


def definition(**changes: Any) -> ExportDefinition:
    values: dict[str, Any] = {
        "list_ids": (LIST,),
        "mapping": MAPPING,
        "name": "high-value",
        "connection": "mkt",
        "segments": (SegmentMatch(export="HighValue", table="Contacts"),),
    }
    values.update(changes)
    return ExportDefinition(**values)


class World:
    def __init__(self, tmp_path: Path, blobs: Iterable[BlobInfo] = ()) -> None:
        self.catalog = Catalog(FolderDocuments(tmp_path / "catalog"))
        self.runs = RunIndex(FolderDocuments(tmp_path / "runs"))
        self.engine = Engine()
        self.inbox = MemoryInbox(blobs)
        self.preflighted: list[ExportDefinition] = []
        self.launcher = Launcher(
            self.catalog,
            self.inbox,
            self.runs,
            self.engine,
            quiet_seconds=QUIET,
            clock=lambda: NOW,
        )

    async def connect(self, *, consent: bool = True, status: str = "connected") -> None:
        await self.catalog.save_connection(
            Connection(
                "mkt",
                "Marketing",
                roles=("marketing",),
                consent=PrivacyConsent("oid-1", "2026-01-01T00:00:00Z") if consent else None,
                status=ConnectionStatus(status),
            )
        )

    async def recorded(self) -> list[RunRecord]:
        return await self.runs.recent("high-value")


# --- run_input ---------------------------------------------------------------------------------


def test_the_input_names_the_run_the_definition_the_folder_and_the_trigger() -> None:
    run_id = run_key("high-value", folder())
    options = RunOptions(full=True)
    doc = run_input(run_id, definition(), folder(), "blob", NOW, options)
    run = RunInput.from_json(doc)
    assert run.run_id == run_id
    assert run.definition() == definition()
    assert (run.source, run.connection, run.trigger) == (
        "az://inbox/HighValue/Contacts/2026/03/04/1100",
        "mkt",
        "blob",
    )
    assert run.requested_at == "2026-03-04T12:00:00Z"
    assert run.options == options
    without = RunInput.from_json(
        run_input(run_id, definition(connection=None), folder(), "timer", NOW)
    )
    assert (without.connection, without.trigger, without.options) == (
        "default",
        "timer",
        RunOptions(),
    )


# --- Launcher.start ----------------------------------------------------------------------------


async def test_a_folder_starts_once_under_its_run_key(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.connect()
    first = await w.launcher.start(definition(), folder(), "blob")
    run_id = run_key("high-value", folder())
    assert first == RunStart(
        run_id, Outcome.STARTED, "high-value", "az://inbox/HighValue/Contacts/2026/03/04/1100"
    )
    grant = RunGrant.given("", "blob", None)  # the app started it, with the connection's id
    payload = run_input(run_id, definition(), folder(), "blob", NOW, grant=grant)
    assert w.engine.started == [(run_id, payload)]
    assert await w.recorded() == [
        RunRecord(
            run_id,
            "high-value",
            "az://inbox/HighValue/Contacts/2026/03/04/1100",
            "mkt",
            "blob",
            "2026-03-04T12:00:00Z",
        )
    ]
    again = await w.launcher.start(definition(), folder(), "blob")  # the event, delivered again
    assert again == dataclasses.replace(first, outcome=Outcome.RUNNING, status="Pending")
    assert len(w.engine.started) == 1
    assert len(await w.recorded()) == 1


@pytest.mark.parametrize("status", sorted(ACTIVE))
async def test_a_run_in_any_active_state_is_not_started_again(tmp_path: Path, status: str) -> None:
    w = World(tmp_path)
    await w.connect()
    run_id = run_key("high-value", folder())
    w.engine.status[run_id] = status
    result = await w.launcher.start(definition(), folder(), "timer", restart_done=True)
    assert (result.outcome, result.status, result.run_id) == (Outcome.RUNNING, status, run_id)
    assert w.engine.started == []
    assert await w.recorded() == []


async def test_a_finished_run_starts_again_only_when_a_person_asks(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.connect()
    run_id = run_key("high-value", folder())
    w.engine.status[run_id] = "Completed"
    done = await w.launcher.start(definition(), folder(), "timer")
    assert done == RunStart(run_id, Outcome.DONE, "high-value", SOURCE, "Completed")
    assert w.engine.started == []
    again = await w.launcher.start(definition(), folder(), "http", restart_done=True)
    assert (again.outcome, again.status) == (Outcome.STARTED, "Completed")
    assert [r for r, _ in w.engine.started] == [run_id]


@pytest.mark.parametrize(
    ("resume_after", "resumes"),
    [
        ("2026-03-04T00:00:00Z", True),
        ("2026-03-04T12:00:00Z", True),
        ("2026-03-05T00:00:00Z", False),
    ],
)
async def test_a_run_the_quota_stopped_resumes_by_itself_once_the_quota_has_reset(
    tmp_path: Path, resume_after: str, resumes: bool
) -> None:
    w = World(tmp_path)
    await w.connect()
    run_id = run_key("high-value", folder())
    w.engine.status[run_id] = "Completed"
    w.engine.outputs[run_id] = {"status": "quota_exhausted", "resume_after": resume_after}
    result = await w.launcher.start(definition(), folder(), "timer")
    assert (result.outcome is Outcome.STARTED) is resumes
    assert [r for r, _ in w.engine.started] == ([run_id] if resumes else [])


@pytest.mark.parametrize(
    "output",
    [
        {"status": "needs_confirmation", "resume_after": None},
        {"status": "failed", "resume_after": None},
        {"status": "completed_with_errors", "resume_after": None},
        {"status": "quota_exhausted", "resume_after": "not a time"},
        None,
    ],
)
async def test_no_other_finished_run_goes_on_by_itself(
    tmp_path: Path, output: dict[str, Any] | None
) -> None:
    w = World(tmp_path)
    await w.connect()
    run_id = run_key("high-value", folder())
    w.engine.status[run_id] = "Completed"
    if output is not None:
        w.engine.outputs[run_id] = output
    result = await w.launcher.start(definition(), folder(), "timer")
    assert result.outcome is Outcome.DONE
    assert w.engine.started == []


@pytest.mark.parametrize("status", ["Failed", "Terminated", "Canceled"])
async def test_a_failed_or_stopped_run_is_started_again(tmp_path: Path, status: str) -> None:
    w = World(tmp_path)
    await w.connect()
    w.engine.status[run_key("high-value", folder())] = status
    result = await w.launcher.start(definition(), folder(), "blob")
    assert (result.outcome, result.status) == (Outcome.STARTED, status)


async def test_another_folder_or_definition_is_another_run(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.connect()
    one = await w.launcher.start(definition(), folder(), "blob")
    reexport = await w.launcher.start(definition(), folder("2026/03/04/1100", '"0x2"'), "blob")
    other = await w.launcher.start(definition(name="other-export"), folder(), "blob")
    assert len({one.run_id, reexport.run_id, other.run_id}) == 3
    assert [r.outcome for r in (one, reexport, other)] == [Outcome.STARTED] * 3


async def test_a_start_another_delivery_won_is_already_running(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.connect()
    w.engine.refuse_with = "Running"
    result = await w.launcher.start(definition(), folder(), "blob")
    run_id = run_key("high-value", folder())
    assert result == RunStart(run_id, Outcome.RUNNING, "high-value", SOURCE, "Running")
    assert await w.recorded() == []


@pytest.mark.parametrize("left", ["Completed", "Failed"])
async def test_a_start_refused_for_another_reason_fails(tmp_path: Path, left: str) -> None:
    w = World(tmp_path)
    await w.connect()
    w.engine.refuse_with = left
    with pytest.raises(RuntimeError, match="exists"):
        await w.launcher.start(definition(), folder(), "blob")
    assert await w.recorded() == []


async def test_only_a_named_definition_runs(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.connect()
    with pytest.raises(ConfigError, match=r"^only a named export definition can be run$"):
        await w.launcher.start(definition(name=None), folder(), "cli")
    assert w.engine.started == []


async def test_the_run_carries_the_definition_its_preflight_checked(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.connect()
    resolved = definition(list_ids=("0f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b",))
    seen: list[ExportDefinition] = []

    async def preflight(d: ExportDefinition) -> ExportDefinition:
        seen.append(d)
        return resolved

    w.launcher = Launcher(
        w.catalog, w.inbox, w.runs, w.engine, quiet_seconds=QUIET, clock=lambda: NOW,
        preflight=preflight,
    )  # fmt: skip
    result = await w.launcher.start(definition(), folder(), "blob")
    assert seen == [definition()]
    assert result.run_id == run_key("high-value", folder())  # the key is the definition's name
    ((_, payload),) = w.engine.started
    assert RunInput.from_json(payload).definition() == resolved


async def test_a_preflight_that_needs_reconnecting_is_not_ready(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.connect()

    async def preflight(_d: ExportDefinition) -> ExportDefinition:
        raise ReauthorizationRequired("mkt", "its refresh token was refused")

    w.launcher = Launcher(
        w.catalog, w.inbox, w.runs, w.engine, quiet_seconds=QUIET, clock=lambda: NOW,
        preflight=preflight,
    )  # fmt: skip
    with pytest.raises(NotReady, match="its refresh token was refused"):
        await w.launcher.start(definition(), folder(), "blob")
    # events and the schedule log it and start nothing; a retry would not change it
    assert await w.launcher._start_or_log(definition(), folder(), "blob") == []
    assert w.engine.started == []


async def test_input_to_fix_starts_nothing_for_events_but_other_errors_surface(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    await w.connect()
    errors: list[Exception] = [InputError("list 'Newsletter' not found"), RuntimeError("bug")]

    async def preflight(_d: ExportDefinition) -> ExportDefinition:
        raise errors.pop(0)

    w.launcher = Launcher(
        w.catalog, w.inbox, w.runs, w.engine, quiet_seconds=QUIET, clock=lambda: NOW,
        preflight=preflight,
    )  # fmt: skip
    assert await w.launcher._start_or_log(definition(), folder(), "blob") == []
    with pytest.raises(RuntimeError, match="bug"):
        await w.launcher._start_or_log(definition(), folder(), "blob")
    other = World(tmp_path / "b")
    await other.connect()
    started = await other.launcher._start_or_log(definition(), folder(), "blob")
    assert [r.outcome for r in started] == [Outcome.STARTED]


async def test_the_app_s_poll_seconds_reach_every_run_it_starts_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    await w.connect()
    w.launcher.poll_seconds = 0.5
    await w.launcher.start(definition(), folder(), "blob")
    full = RunOptions(full=True)
    await w.launcher.start(definition(), folder("2026/03/04/1200"), "http", options=full)
    (_, plain), (_, asked) = w.engine.started
    assert RunInput.from_json(plain).options == RunOptions(poll_seconds=0.5)
    assert RunInput.from_json(asked).options == RunOptions(full=True, poll_seconds=0.5)
    other = World(tmp_path / "b")  # unset: the runs' own default, carried as no options
    await other.connect()
    await other.launcher.start(definition(), folder(), "blob")
    ((_, default),) = other.engine.started
    assert "options" not in default
    assert RunInput.from_json(default).options == RunOptions()


@pytest.mark.parametrize(
    ("value", "expected"), [("", None), (" ", None), ("0.5", 0.5), ("3600", 3600.0)]
)
def test_run_poll_seconds_is_read_from_the_settings(value: str, expected: float | None) -> None:
    assert AppSettings.from_mapping({"RUN_POLL_SECONDS": value}).poll_seconds == expected
    assert AppSettings.from_mapping({}).poll_seconds is None


@pytest.mark.parametrize("value", ["0", "-1", "3601", "ten", "nan"])
def test_a_run_poll_seconds_out_of_range_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match=f"RUN_POLL_SECONDS must be .* not '{value}'"):
        AppSettings.from_mapping({"RUN_POLL_SECONDS": value})


# --- Launcher.run_now ----------------------------------------------------------------------------


def inbox_with_two_tables() -> list[BlobInfo]:
    return [
        part("HighValue/Contacts/2026/03/04/0900/Contacts_1.csv", '"0xa"', 180),
        part("HighValue/Contacts/2026/03/04/1100/Contacts_1.csv", '"0xb"', 60),
        part("HighValue/Contacts/2026/03/04/1155/Contacts_1.csv", '"0xc"', 1),  # still arriving
        part("HighValue/Leads/2026/03/04/1000/Leads_1.csv", '"0xd"', 120),
        part("Other/Contacts/2026/03/04/1100/Contacts_1.csv", '"0xe"', 60),
    ]


async def test_run_now_sends_the_newest_complete_folder_of_each_matching_table(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, inbox_with_two_tables())
    await w.connect()
    wide = definition(segments=(SegmentMatch(export="HighValue"),))
    results = await w.launcher.run_now(wide)
    assert sorted(r.source for r in results) == [
        "az://inbox/HighValue/Contacts/2026/03/04/1100",
        "az://inbox/HighValue/Leads/2026/03/04/1000",
    ]
    assert {RunInput.from_json(p).trigger for _, p in w.engine.started} == {"http"}
    again = await w.launcher.run_now(wide, trigger="cli")
    assert [r.outcome for r in again] == [Outcome.RUNNING, Outcome.RUNNING]

    def finish_all() -> None:
        for _, payload in w.engine.started:
            w.engine.status[payload["run_id"]] = "Completed"

    finish_all()
    done = await w.launcher.run_now(wide)
    assert [r.outcome for r in done] == [Outcome.DONE, Outcome.DONE]
    forced = await w.launcher.run_now(wide, force=True)
    assert [r.outcome for r in forced] == [Outcome.STARTED, Outcome.STARTED]
    finish_all()
    full = await w.launcher.run_now(wide, options=RunOptions(full=True))
    assert [r.outcome for r in full] == [Outcome.DONE, Outcome.DONE]  # options alone: no
    confirmed = await w.launcher.run_now(wide, options=RunOptions(confirm_removals=True))
    assert [r.outcome for r in confirmed] == [Outcome.STARTED, Outcome.STARTED]
    assert RunInput.from_json(w.engine.started[-1][1]).options.confirm_removals


async def test_run_now_on_a_named_folder(tmp_path: Path) -> None:
    w = World(tmp_path, inbox_with_two_tables())
    await w.connect()
    results = await w.launcher.run_now(
        definition(), folder_path="/HighValue/Contacts/2026/03/04/0900/"
    )
    assert [r.source for r in results] == ["az://inbox/HighValue/Contacts/2026/03/04/0900"]
    with pytest.raises(ConfigError) as caught:
        await w.launcher.run_now(definition(), folder_path="Nothing/here")
    assert str(caught.value) == (
        "inbox/Nothing/here: no Customer Insights part files there "
        "(expected <Export>/<Table>/yyyy/MM/dd/HHmm)"
    )


async def test_a_named_folder_outside_the_exports_segments_is_refused_unlisted(
    tmp_path: Path,
) -> None:
    """Contributors keep to their exports: the right to run one is no right to read
    another's folders, whether the folder exists or not (the inbox is not listed)."""
    blobs = [
        *inbox_with_two_tables(),
        part("Payroll/Contacts/2026/03/04/1100/Contacts_1.csv", '"0x8"'),
    ]
    w = World(tmp_path, blobs)
    await w.connect()
    listed: list[str] = []
    real = w.inbox.run_folder

    async def run_folder(path: str) -> RunFolder | None:
        listed.append(path)
        return await real(path)

    w.inbox.run_folder = run_folder  # type: ignore[method-assign]
    for path in (
        "Payroll/Contacts/2026/03/04/1100",  # another export's folder that exists
        "HighValue/Leads/2026/03/04/1000",  # the same export, a table it does not read
        "Nowhere/Contacts/2026/03/04/1100",
        "Team/HighValue/Contacts/2026/03/04/1100",  # deeper: a root the prefix refuses
    ):
        only_root = definition(segments=(SegmentMatch("HighValue", "Contacts", prefix="High"),))
        with pytest.raises(InputError) as caught:
            await w.launcher.run_now(only_root, folder_path=path)
        assert str(caught.value) == (
            f"export 'high-value': folder {path!r} is not in its segments; "
            "a run reads only the folders its export's segments match"
        )
    assert listed == []
    assert w.engine.started == []
    results = await w.launcher.run_now(
        definition(), folder_path="HighValue/Contacts/2026/03/04/0900"
    )
    assert [r.outcome for r in results] == [Outcome.STARTED]
    assert listed == ["HighValue/Contacts/2026/03/04/0900"]


async def test_blob_names_from_the_inbox_are_logged_escaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder or blob name with a line break and a fake log prefix cannot forge a log
    line: each is one record, its name escaped."""
    forged = "HighValue/Contacts\n2026-01-01 ERROR ccexport: forged"
    whole = f"{forged}/2026/03/04/0900/Contacts_1.csv"
    arriving = f"{forged}/2026/03/04/1155/Contacts_1.csv"
    w = World(tmp_path, [part(whole, '"0xa"', 180), part(arriving, '"0xb"', 1)])
    await w.connect()
    await w.catalog.save_export(definition(segments=(SegmentMatch(export="HighValue"),)))
    caplog.set_level("DEBUG", logger="shared.runs.launcher")
    for name, says in (
        ("notes\n2026-01-01 ERROR ccexport: forged.txt", "is not part of a Customer Insights"),
        (whole, "started (blob) for"),
        (arriving, "not complete yet"),
    ):
        caplog.clear()
        await w.launcher.on_blob_created(name)
        records = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
        assert len(records) == 1, records
        assert says in records[0]
        assert "\n" not in records[0]
        assert "\\n2026-01-01 ERROR ccexport: forged" in records[0]
    assert len(w.engine.started) == 1


async def test_a_named_folder_keeps_every_character_of_its_name(tmp_path: Path) -> None:
    """Only the slashes around a folder path go, never a letter of it ("Xmas/")."""
    blobs = [part("Xmas/Contacts/2026/03/04/1100/Contacts_1.csv", '"0x9"')]
    w = World(tmp_path, blobs)
    await w.connect()
    xmas = definition(segments=(SegmentMatch(export="Xmas"),))
    results = await w.launcher.run_now(xmas, folder_path="/Xmas/Contacts/2026/03/04/1100/")
    assert [r.source for r in results] == ["az://inbox/Xmas/Contacts/2026/03/04/1100"]


async def test_run_now_says_when_there_is_nothing_to_send(tmp_path: Path) -> None:
    w = World(tmp_path, inbox_with_two_tables())
    await w.connect()
    for folder_path in (None, "HighValue/Contacts/2026/03/04/0900"):
        with pytest.raises(ConfigError) as caught:
            await w.launcher.run_now(definition(segments=()), folder_path=folder_path)
        assert str(caught.value) == (
            "export 'high-value' has no segments: add the export and table "
            "folders it reads before running it"
        )
    none = definition(segments=(SegmentMatch(export="Missing"),))
    with pytest.raises(ConfigError) as caught:
        await w.launcher.run_now(none)
    assert str(caught.value) == (
        "export 'high-value': no complete run folder in inbox matches its segments yet"
    )
    assert w.engine.started == []


@pytest.mark.parametrize(
    ("consent", "status", "message"),
    [
        (False, "connected", "consent has not been accepted"),
        (True, "not_connected", "is not connected to Constant Contact yet"),
        (True, "needs_reauthorisation", "needs to be reconnected"),
    ],
)
async def test_run_now_refuses_a_connection_that_may_not_send(
    tmp_path: Path, consent: bool, status: str, message: str
) -> None:
    w = World(tmp_path, inbox_with_two_tables())
    await w.connect(consent=consent, status=status)
    with pytest.raises(NotReady, match=message):
        await w.launcher.run_now(definition())
    assert w.engine.started == []
    with pytest.raises(NotReady, match="names no connection"):
        await w.launcher.run_now(definition(connection=None))
    with pytest.raises(NotReady, match="which does not exist"):
        await w.launcher.run_now(definition(connection="nope"))
