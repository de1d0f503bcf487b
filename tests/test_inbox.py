"""The inbox layout, run folder completeness and run keys (pure, and listings on Azurite)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob.aio import BlobServiceClient

from shared.exports.definitions import ExportDefinition, SegmentMatch
from shared.segments.inbox import (
    BlobInfo,
    Inbox,
    RunFolder,
    completeness,
    export_of_run,
    group_folders,
    newest_complete,
    run_key,
)
from shared.segments.layout import parse_blob_name
from tests.support.function_harness import AppEnv

T0 = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
ROOT = "CustomerInsights_abcd/"
RUN = f"{ROOT}BlobExport/HighValue/2026/11/28/0930"
LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def part(name: str, etag: str, seconds: float) -> BlobInfo:
    return BlobInfo(name, etag, T0 + timedelta(seconds=seconds))


def folder(*parts: BlobInfo, path: str = RUN) -> RunFolder:
    [found] = group_folders("inbox", parts or [part(f"{path}/HighValue_1.csv", '"0x1"', 0)])
    return found


def test_parse_parts_and_model() -> None:
    got = parse_blob_name(f"{RUN}/HighValue_2.csv")
    assert got is not None
    assert (got.root, got.export, got.table, got.stamp) == (
        ROOT,
        "BlobExport",
        "HighValue",
        "2026/11/28/0930",
    )
    assert got.run_folder == RUN
    assert got.export_folder == f"{ROOT}BlobExport"
    at_top = parse_blob_name("BlobExport/T/2026/01/02/0304/T_1.csv.gz")
    assert at_top is not None
    assert at_top.root == ""
    assert at_top.run_folder is not None
    model = parse_blob_name(f"{ROOT}BlobExport/model.json")
    assert model is not None
    assert model.is_model
    assert model.run_folder is None
    assert model.export_folder == f"{ROOT}BlobExport"
    for other in (
        f"{RUN}/notes.txt",  # not a part
        f"{ROOT}BlobExport/HighValue/2026/11/28/HighValue_1.csv",  # a date level missing
        f"{ROOT}BlobExport/HighValue/model.json.bak",
        "model.json",  # no export folder
    ):
        assert parse_blob_name(other) is None, other


def test_complete_when_model_json_is_written_after_the_parts() -> None:
    run = folder(
        part(f"{RUN}/HighValue_1.csv", '"0x1"', 0), part(f"{RUN}/HighValue_2.csv", '"0x2"', 5)
    )
    model_after = BlobInfo("m", '"0xm"', T0 + timedelta(seconds=6))
    model_before = BlobInfo("m", '"0xm"', T0 + timedelta(seconds=4))
    soon = T0 + timedelta(seconds=10)
    assert completeness(run, model_after, soon, 120).complete
    model_same_second = BlobInfo("m", '"0xm"', T0 + timedelta(seconds=5))
    assert not completeness(run, model_same_second, soon, 120).complete  # a tie proves nothing
    waiting = completeness(run, model_before, soon, 120)
    assert not waiting.complete
    assert "quiet time 120s" in waiting.reason
    assert not completeness(run, None, soon, 120).complete
    # Quiet long enough: complete with or without model.json.
    later = T0 + timedelta(seconds=126)
    assert completeness(run, None, later, 120).complete
    assert completeness(run, model_before, later, 120).complete
    assert completeness(run, None, soon, 0).complete


def test_run_key_is_deterministic_and_changes_with_the_files() -> None:
    one = part(f"{RUN}/HighValue_1.csv", '"0x8DC1"', 0)
    two = part(f"{RUN}/HighValue_2.csv", '"0x8DC2"', 1)
    key = run_key("high-value", folder(one, two))
    assert key == run_key("high-value", folder(two, one))  # order of listing is irrelevant
    assert re.fullmatch(r"high-value\.[0-9a-f]{32}", key)
    assert export_of_run(key) == "high-value"
    assert run_key("high-value", folder(one, part(two.name, '"0x8DC3"', 1))) != key  # re-export
    assert run_key("other", folder(one, two)) != key  # other definition
    assert run_key("high-value", folder(one)) != key  # fewer parts
    moved = f"{ROOT}BlobExport/HighValue/2026/11/29/0930"
    assert run_key("high-value", folder(part(f"{moved}/HighValue_1.csv", '"0x8DC1"', 0))) != (
        run_key("high-value", folder(one))
    )
    for bad in ("high-value", "high-value.abc", ".0123456789abcdef0123456789abcdef"):
        assert export_of_run(bad) is None


def test_newest_complete_folder_per_table() -> None:
    older = f"{ROOT}BlobExport/HighValue/2026/11/27/0930"
    newer = f"{ROOT}BlobExport/HighValue/2026/11/28/0930"
    other = f"{ROOT}BlobExport/Lapsed/2026/11/20/0100"
    blobs = [
        part(f"{older}/HighValue_1.csv", '"a"', -86_400),
        part(f"{newer}/HighValue_1.csv", '"b"', 0),  # still being written
        part(f"{other}/Lapsed_1.csv", '"c"', -600_000),
        part(f"{ROOT}BlobExport/model.json", '"m"', -80_000),  # not a part: ignored
    ]
    folders = group_folders("inbox", blobs)
    assert [f.path for f in folders] == [older, newer, other]
    models = {f"{ROOT}BlobExport": BlobInfo("m", '"m"', T0 - timedelta(seconds=80_000))}
    now = T0 + timedelta(seconds=30)
    assert sorted(f.path for f in newest_complete(folders, models, now, 120)) == [older, other]
    later = T0 + timedelta(seconds=200)
    assert sorted(f.path for f in newest_complete(folders, models, later, 120)) == [newer, other]


def test_definitions_match_export_and_table_patterns() -> None:
    run = folder()
    by_names = ExportDefinition(
        (LIST_ID,), {"email": "Email"}, "hv", segments=(SegmentMatch("blobexport", "High*"),)
    )
    by_prefix = ExportDefinition(
        (LIST_ID,), {"email": "Email"}, "p", segments=(SegmentMatch("BlobExport", prefix=ROOT),)
    )
    elsewhere = ExportDefinition(
        (LIST_ID,), {"email": "Email"}, "x", segments=(SegmentMatch("BlobExport", prefix="Other/"),)
    )
    other_table = ExportDefinition(
        (LIST_ID,), {"email": "Email"}, "y", segments=(SegmentMatch("BlobExport", "Lapsed"),)
    )
    assert run.matched_by(by_names)
    assert run.matched_by(by_prefix)
    assert not run.matched_by(elsewhere)
    assert not run.matched_by(other_table)
    assert not run.matched_by(ExportDefinition((LIST_ID,), {"email": "Email"}, "none"))


@pytest.mark.azurite
async def test_listings_on_azurite(app_env: AppEnv) -> None:
    for n in (1, 2):
        app_env.write(f"{RUN}/HighValue_{n}.csv")
    app_env.write(f"{RUN}/readme.txt")
    app_env.write(f"{ROOT}BlobExport/Lapsed/2026/11/28/0930/Lapsed_1.csv")
    app_env.write(f"{ROOT}BlobExport/model.json", b"{}")
    async with BlobServiceClient.from_connection_string(app_env.connection_string) as service:
        inbox = Inbox(service.get_container_client(app_env.inbox))
        run = await inbox.run_folder(RUN)
        assert run is not None
        assert [p.name.rpartition("/")[2] for p in run.parts] == [
            "HighValue_1.csv",
            "HighValue_2.csv",
        ]
        assert run.source == f"az://{app_env.inbox}/{RUN}"
        assert all(p.etag for p in run.parts)
        assert await inbox.run_folder(f"{ROOT}BlobExport/HighValue/2026/11/29/0930") is None
        model = await inbox.model(f"{ROOT}BlobExport")
        assert model is not None
        assert run.last_modified is not None
        assert model.last_modified >= run.last_modified  # written in the same second
        assert await inbox.model("Nowhere") is None
        folders, models = await inbox.scan()
        assert sorted(f.table for f in folders) == ["HighValue", "Lapsed"]
        assert list(models) == [f"{ROOT}BlobExport"]
        assert completeness(run, model, datetime.now(UTC) + timedelta(seconds=2), 1).complete
