"""A run of the function app reads only a run folder of its inbox that its export's
segments match: a run input that names another container, a path on the worker or
another team's folder stops with a reason before anything is read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from shared.errors import InputError
from shared.exports.definitions import ExportDefinition, SegmentMatch
from shared.runs.activities import RunActivities
from shared.runs.prepared import PreparedRun
from shared.runs.recheck import check_source
from tests.chaos.promises import services_for
from tests.support.granted_runs import gate_for, granted, home_catalog, save_ready

LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
EXPORT = ExportDefinition(
    list_ids=(LIST,),
    mapping={"email": "Email"},
    name="high-value",
    segments=(SegmentMatch(export="BlobExport", table="HighValueSegment"),),
)
RUN = "BlobExport/HighValueSegment/2026/11/28/0930"
NOT_IN_INBOX = "the run's source is not in the inbox"
NOT_ITS_SEGMENT = "not a run folder of this export's segments"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (f"az://reports/{RUN}", NOT_IN_INBOX),
        (f"az://inboxes/{RUN}", NOT_IN_INBOX),
        ("/etc/passwd", NOT_IN_INBOX),
        ("az://inbox/OtherTeam/HighValueSegment/2026/11/28/0930", NOT_ITS_SEGMENT),
        ("az://inbox/BlobExport/OtherTable/2026/11/28/0930", NOT_ITS_SEGMENT),
        ("az://inbox/BlobExport/HighValueSegment/model.json", NOT_ITS_SEGMENT),
        ("az://inbox/", NOT_ITS_SEGMENT),
    ],
)
def test_a_source_outside_the_inbox_or_the_exports_segments_is_refused(
    source: str, reason: str
) -> None:
    with pytest.raises(InputError, match=reason):
        check_source(source, EXPORT, "az://inbox/")


def test_a_run_folder_of_the_exports_segments_in_the_inbox_is_read() -> None:
    check_source(f"az://inbox/{RUN}", EXPORT, "az://inbox/")
    check_source(f"az://inbox/exports/{RUN}", EXPORT, "az://inbox/")  # under a root folder
    check_source("/anywhere/at/all", EXPORT, None)  # the command line: any folder


def test_a_local_inbox_keeps_runs_inside_it(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    check_source(str(inbox / RUN), EXPORT, str(inbox))
    for outside in (tmp_path / "elsewhere" / RUN, inbox / ".." / "elsewhere" / RUN):
        with pytest.raises(InputError, match=NOT_IN_INBOX):
            check_source(str(outside), EXPORT, str(inbox))


async def test_the_prepare_activity_stops_a_run_whose_source_is_not_its_own(
    tmp_path: Path,
) -> None:
    """Started directly with a bad input, as anyone holding the Durable API could: the
    activity answers the reason and reads nothing (the folder exists and is valid, and
    the run's grant holds)."""
    elsewhere = tmp_path / "elsewhere" / RUN
    elsewhere.mkdir(parents=True)
    (elsewhere / "HighValueSegment_1.csv").write_text("Email\r\nana@example.com\r\n")
    home = tmp_path / "home"
    export, connection = await save_ready(home_catalog(home), EXPORT)
    env = {"CCEXPORT_HOME": str(home)}
    services = replace(services_for(env), gate=gate_for(home, str(tmp_path / "inbox")))
    run = granted("high-value.bad-source", export, connection, str(elsewhere))
    prepared = PreparedRun.from_json(await RunActivities(services).prepare_segment(run.to_json()))
    assert prepared.error is not None
    assert NOT_IN_INBOX in prepared.error
    assert prepared.chunks == ()
    assert prepared.rows_read == 0
