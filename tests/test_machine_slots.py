"""At most a few prepares at once on one machine, whatever their processes: slots taken
by real processes, freed by a holder's death, and the prepare activity waiting for one."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from shared.exports.definitions import ExportDefinition, SegmentMatch
from shared.runs.activities import RunActivities
from shared.runs.prepared import PreparedRun
from shared.storage.slots import MachineSlots
from tests.chaos.promises import services_for
from tests.support.granted_runs import granted, home_catalog, save_ready
from tests.support.services import ROOT

_HOLDER = """
import sys, time
from pathlib import Path
from shared.storage.slots import MachineSlots

folder, log = Path(sys.argv[1]), Path(sys.argv[2])
rounds, work = int(sys.argv[3]), float(sys.argv[4])
slots = MachineSlots("work", 2, folder=folder, poll=0.01)
while not log.with_suffix(".go").exists():
    time.sleep(0.005)
for _ in range(rounds):
    with slots.hold():
        with log.open("a") as out:
            out.write(f"in {time.monotonic():.6f}\\n")
        print("held", flush=True)
        time.sleep(work)
        with log.open("a") as out:
            out.write(f"out {time.monotonic():.6f}\\n")
"""


def _holder(folder: Path, log: Path, rounds: int, work: float) -> subprocess.Popen[str]:
    return subprocess.Popen(  # a fixed script over this repository's code
        [sys.executable, "-c", _HOLDER, str(folder), str(log), str(rounds), str(work)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _most_at_once(lines: list[str]) -> int:
    events = sorted((float(moment), kind) for kind, moment in (line.split() for line in lines))
    inside = most = 0
    for _moment, kind in events:  # at one instant, "in" sorts before "out": no credit
        inside += 1 if kind == "in" else -1
        most = max(most, inside)
    return most


def test_two_slots_admit_two_processes_at_a_time(tmp_path: Path) -> None:
    log = tmp_path / "log"
    procs = [_holder(tmp_path / "slots", log, rounds=3, work=0.2) for _ in range(4)]
    log.with_suffix(".go").touch()
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    lines = log.read_text().splitlines()
    assert len(lines) == 4 * 3 * 2
    assert _most_at_once(lines) == 2  # never three; and two did overlap


def test_a_slot_is_freed_when_its_holder_dies(tmp_path: Path) -> None:
    log = tmp_path / "log"
    holders = [_holder(tmp_path / "slots", log, rounds=1, work=60.0) for _ in range(2)]
    log.with_suffix(".go").touch()
    for holder in holders:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
    slots = MachineSlots("work", 2, folder=tmp_path / "slots", poll=0.01)
    holders[0].send_signal(signal.SIGKILL)
    holders[0].wait(timeout=10)
    started = time.monotonic()
    with slots.hold() as waited:
        assert waited < 0.5
    assert time.monotonic() - started < 0.5  # no stale slot to wait out
    holders[1].send_signal(signal.SIGKILL)
    holders[1].wait(timeout=10)


def test_without_a_usable_folder_the_work_goes_ahead(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with MachineSlots("work", 1, folder=blocked / "slots").hold() as waited:
        assert waited == 0.0


EXPORT = ExportDefinition(
    list_ids=("6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b",),
    mapping={"email": "Email"},
    name="high-value",
    segments=(SegmentMatch(export="BlobExport", table="HighValueSegment"),),
)


async def test_a_prepare_waits_for_a_slot_of_the_machine(tmp_path: Path) -> None:
    """With the machine's one slot held elsewhere, the prepare activity reads nothing
    until it is given back, then prepares the segment as usual."""
    folder = tmp_path / "inbox" / "BlobExport/HighValueSegment/2026/11/28/0930"
    folder.mkdir(parents=True)
    (folder / "HighValueSegment_1.csv").write_text("Email\r\nana@example.com\r\n")
    home = tmp_path / "home"
    export, connection = await save_ready(home_catalog(home), EXPORT)
    slots = MachineSlots("prepare", 1, folder=tmp_path / "slots", poll=0.01)
    services = replace(services_for({"CCEXPORT_HOME": str(home)}), prepare_slots=slots)
    run = granted("high-value.slot", export, connection, str(folder))
    with MachineSlots("prepare", 1, folder=tmp_path / "slots").hold():
        task = asyncio.create_task(RunActivities(services).prepare_segment(run.to_json()))
        await asyncio.sleep(0.5)
        assert not task.done()
    prepared = PreparedRun.from_json(await asyncio.wait_for(task, timeout=30))
    assert prepared.error is None
    assert prepared.rows_read == 1
    assert len(prepared.chunks) == 1
