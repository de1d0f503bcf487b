"""prepare end to end, for each input variant, on local files and on blobs in Azurite."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from shared.errors import InputError
from shared.exports.definitions import ExportDefinition
from shared.prepare.outputs import BlobOutput, LocalOutput
from shared.prepare.pipeline import PrepareResult, prepare
from shared.segments import layout as segments
from shared.storage import files
from tests.support.body_checks import DEFAULT_CAP, check_bodies, check_summary, chunk_files
from tests.support.segment_trees import RUN, Place, Tree, csv_bytes, gz, model_json

LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
COLUMNS = ("CustomerId", "Email", "FirstName", "LastName")
MAPPING = {"email": "Email", "first_name": "FirstName", "last_name": "LastName"}


@pytest.fixture(params=["local", "blob"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    service = None
    if request.param == "blob":
        service = BlobServiceClient.from_connection_string(request.getfixturevalue("azurite"))
    p = Place(request.param, tmp_path / "in", service)
    yield p
    if service is not None:
        service.get_container_client(p.container).delete_container()


def run(place: Place, tree: Tree, source: str, out: Path, **export: Any) -> PrepareResult:
    place.write(tree)
    store, name = files.resolve(place.source(source), place.blob_service)
    definition = ExportDefinition(
        list_ids=(LIST,), mapping=export.pop("mapping", MAPPING), **export
    )
    segment = segments.locate(store, name, encoding=definition.encoding)
    result = prepare(segment, definition, LocalOutput(out))
    checked = check_bodies(chunk_files(out), list_ids=[LIST])  # every body, every prepare
    assert checked.counts == [c.contacts for c in result.chunks]
    check_summary(result.summary, checked, DEFAULT_CAP)
    return result


def sent(out: Path) -> list[dict[str, Any]]:
    """The contacts of every body, in order, each body checked first
    (tests/support/body_checks.py)."""
    return check_bodies(chunk_files(out), list_ids=[LIST]).contacts


def rejects(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "rejects.csv").read_text(encoding="utf-8"))))


def people(n: int, start: int = 1) -> list[tuple[str, ...]]:
    return [
        (f"id{i}", f"p{i}@example.com", f"First{i}", f"Last{i}") for i in range(start, start + n)
    ]


def reconciles(summary: dict[str, Any]) -> None:
    assert summary["rows_read"] == summary["contacts"] + summary["rejected"] + summary["duplicates"]


def test_header_row_without_model_json(place: Place, tmp_path: Path) -> None:
    tree = {"seg.csv": csv_bytes([("CustomerId", "Email", "FirstName", "LastName"), *people(3)])}
    result = run(place, tree, "seg.csv", tmp_path / "out")
    assert [c["email"] for c in sent(tmp_path / "out")] == [f"p{i}@example.com" for i in (1, 2, 3)]
    assert result.summary["rows_read"] == 3
    reconciles(result.summary)


def test_model_json_names_columns_of_headerless_parts(place: Place, tmp_path: Path) -> None:
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS, parts=2),
        f"{RUN}/Seg_1.csv": csv_bytes(people(2)),
        f"{RUN}/Seg_2.csv": csv_bytes(people(2, start=3)),
    }
    result = run(place, tree, RUN, tmp_path / "out")
    got = sent(tmp_path / "out")
    assert [c["email"] for c in got] == [f"p{i}@example.com" for i in range(1, 5)]
    assert got[0] == {"email": "p1@example.com", "first_name": "First1", "last_name": "Last1"}
    assert result.summary["entity"] == "Seg"
    assert [p["rows"] for p in result.summary["parts"]] == [2, 2]


@pytest.mark.parametrize("declared", [True, None])
def test_model_json_with_header_rows(place: Place, tmp_path: Path, declared: bool | None) -> None:
    """columnHeaders: true, or absent and detected by matching the column names."""
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS, header=declared),
        f"{RUN}/Seg_1.csv": csv_bytes([COLUMNS, *people(2)]),
    }
    result = run(place, tree, RUN, tmp_path / "out")
    assert result.summary["rows_read"] == 2
    assert result.summary["rejected"] == 0


def test_table_folder_takes_its_newest_run(place: Place, tmp_path: Path) -> None:
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS),
        "ci/BlobExport/Seg/2026/11/27/0930/Seg_1.csv": csv_bytes(people(1)),
        "ci/BlobExport/Seg/2026/11/28/0815/Seg_1.csv": csv_bytes(people(1, start=7)),
        "ci/BlobExport/Seg/2025/12/31/2359/Seg_1.csv": csv_bytes(people(1, start=9)),
    }
    run(place, tree, "ci/BlobExport/Seg", tmp_path / "out")
    assert [c["email"] for c in sent(tmp_path / "out")] == ["p7@example.com"]


def test_model_json_entity_chosen_by_table_name(place: Place, tmp_path: Path) -> None:
    other = ("Email", "Nope")
    tree = {
        "ci/BlobExport/model.json": model_json(other, entity="Other", extra_entities=())[:-2]
        + b","
        + model_json(COLUMNS)[len(b'{"name":"BlobExport","version":"1.0","entities":[') :],
        f"{RUN}/Seg_1.csv": csv_bytes(people(1)),
    }
    result = run(place, tree, RUN, tmp_path / "out")
    assert result.summary["entity"] == "Seg"
    assert result.summary["contacts"] == 1


def test_bom_crlf_and_quoted_fields(place: Place, tmp_path: Path) -> None:
    rows = [
        ("CustomerId", "Email", "FirstName", "LastName"),
        ("1", "a@example.com", 'Anne "Nan"', "Smith, Jr."),
        ("2", "b@example.com", "Line\r\nbreak", "Zoë"),
        ("3", "c@example.com", "", "Ünal"),
    ]
    tree = {"seg.csv": b"\xef\xbb\xbf" + csv_bytes(rows)}
    result = run(place, tree, "seg.csv", tmp_path / "out")
    got = sent(tmp_path / "out")
    assert got[0] == {
        "email": "a@example.com",
        "first_name": 'Anne "Nan"',
        "last_name": "Smith, Jr.",
    }
    assert got[1]["first_name"] == "Line\r\nbreak"
    assert got[2] == {"email": "c@example.com", "last_name": "Ünal"}  # empty values not sent
    assert result.summary["rows_read"] == 3


def test_lf_line_endings_and_blank_lines(place: Place, tmp_path: Path) -> None:
    data = b"Email,FirstName\nx@example.com,X\n\ny@example.com,Y\n"
    result = run(
        place,
        {"s.csv": data},
        "s.csv",
        tmp_path / "out",
        mapping={"email": "Email", "first_name": "FirstName"},
    )
    assert result.summary["rows_read"] == 2
    assert result.summary["contacts"] == 2


def test_gzip_parts(place: Place, tmp_path: Path) -> None:
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS, parts=2),
        f"{RUN}/Seg_1.csv.gz": gz(csv_bytes(people(3))),
        f"{RUN}/Seg_2.csv": csv_bytes(people(1, start=4)),
    }
    result = run(place, tree, RUN, tmp_path / "out")
    assert result.summary["contacts"] == 4


def test_parts_are_read_in_partition_order(place: Place, tmp_path: Path) -> None:
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS, parts=10),
        **{f"{RUN}/Seg_{i}.csv": csv_bytes(people(1, start=i)) for i in (10, 2, 1)},
    }
    run(place, tree, RUN, tmp_path / "out")
    assert [c["email"] for c in sent(tmp_path / "out")] == [
        "p1@example.com", "p2@example.com", "p10@example.com"]  # fmt: skip


def test_empty_files(place: Place, tmp_path: Path) -> None:
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS, parts=3),
        f"{RUN}/Seg_1.csv": b"",
        f"{RUN}/Seg_2.csv": csv_bytes(people(2)),
        f"{RUN}/Seg_3.csv": b"",
    }
    result = run(place, tree, RUN, tmp_path / "out")
    assert result.summary["contacts"] == 2
    assert [p["rows"] for p in result.summary["parts"]] == [0, 2, 0]


def test_an_empty_export_prepares_nothing(place: Place, tmp_path: Path) -> None:
    result = run(place, {"s.csv": b""}, "s.csv", tmp_path / "out")
    assert result.summary["chunks"] == 0
    assert result.summary["rows_read"] == 0
    assert list((tmp_path / "out" / "chunks").iterdir()) == []


def test_rejects_and_duplicates_account_for_every_row(place: Place, tmp_path: Path) -> None:
    rows = [
        COLUMNS,
        ("1", "  Good@Example.com ", "G", "One"),
        ("2", "", "No", "Email"),
        ("3", "not-an-email", "Bad", "Syntax"),
        ("4", "GOOD@example.COM", "Second", "Person"),
        ("5", "x" * 45 + "@example.com", "Too", "Long"),
        ("6", "ünï@example.com", "Non", "Ascii"),
        ("7", "short@example.com", "Ragged"),
        ("8", "=cmd@example.com", "Formula", "=HYPERLINK(1)"),
    ]
    result = run(place, {"s.csv": csv_bytes(rows)}, "s.csv", tmp_path / "out")
    s = result.summary
    assert (s["rows_read"], s["contacts"], s["rejected"], s["duplicates"]) == (8, 2, 5, 1)
    reconciles(s)
    assert s["reject_reasons"] == {
        "email_too_long": 1, "invalid_email": 1, "missing_email": 1,
        "non_ascii_email": 1, "ragged_row": 1,
    }  # fmt: skip
    got = sent(tmp_path / "out")
    assert got[0] == {"email": "good@example.com", "first_name": "G", "last_name": "One"}
    # a formula-looking value is data: sent as it is; rejects.csv is what gets neutralised
    assert got[1]["last_name"] == "=HYPERLINK(1)"
    by_row = {r["row"]: r for r in rejects(tmp_path / "out")}
    assert set(by_row) == {"2", "3", "4", "5", "6", "7"}
    assert by_row["4"]["reason"] == "duplicate"
    assert by_row["4"]["detail"] == "same email as row 1"
    assert by_row["3"]["email"] == "not-an-email"
    assert by_row["7"]["detail"] == "3 fields, expected 4"
    assert by_row["3"]["line"] == "4"  # physical line in the file (the header is line 1)


def test_multiline_records_report_their_first_line(place: Place, tmp_path: Path) -> None:
    rows = [COLUMNS, ("1", "a@example.com", "Multi\nline\nname", "X"), ("2", "bad", "B", "C")]
    run(place, {"s.csv": csv_bytes(rows)}, "s.csv", tmp_path / "out")
    (reject,) = rejects(tmp_path / "out")
    assert (reject["row"], reject["line"]) == ("2", "5")


def test_rejects_neutralise_spreadsheet_formulas(place: Place, tmp_path: Path) -> None:
    rows = [COLUMNS, ("1", "=1+1", "A", "B"), ("2", "@SUM(A1)", "A", "B")]
    run(place, {"s.csv": csv_bytes(rows)}, "s.csv", tmp_path / "out")
    assert [r["email"] for r in rejects(tmp_path / "out")] == ["'=1+1", "'@SUM(A1)"]


def test_profile_limit_fails_and_leaves_nothing(place: Place, tmp_path: Path) -> None:
    tree = {"s.csv": csv_bytes([COLUMNS, *people(11)])}
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"more than 10 profiles"):
        run(place, tree, "s.csv", out, max_profiles=10)
    assert list(out.iterdir()) == []
    result = run(place, tree, "s.csv", out, max_profiles=11)
    assert result.summary["contacts"] == 11


def test_missing_email_column_names_the_columns(place: Place, tmp_path: Path) -> None:
    tree = {"s.csv": csv_bytes([COLUMNS, *people(1)])}
    with pytest.raises(InputError) as err:
        run(place, tree, "s.csv", tmp_path / "out", mapping={"email": "PrimaryEmail"})
    assert str(err.value) == (
        'column "PrimaryEmail" (mapped to email) is not in the file; '
        "its columns are: CustomerId, Email, FirstName, LastName"
    )


def test_column_names_match_case_insensitively(place: Place, tmp_path: Path) -> None:
    tree = {"s.csv": csv_bytes([COLUMNS, *people(1)])}
    result = run(place, tree, "s.csv", tmp_path / "out", mapping={"email": "email"})
    assert result.summary["contacts"] == 1


def test_undecodable_file_is_one_clear_error(place: Place, tmp_path: Path) -> None:
    data = csv_bytes([COLUMNS, *people(2)]) + "3,c@example.com,Zoë,X\r\n".encode("cp1252")
    with pytest.raises(InputError, match=r"cannot decode line 4 as UTF-8.*\"encoding\""):
        run(place, {"s.csv": data}, "s.csv", tmp_path / "out")
    assert not (tmp_path / "out" / "summary.json").exists()
    result = run(place, {"s.csv": data}, "s.csv", tmp_path / "out2", encoding="cp1252")
    assert sent(tmp_path / "out2")[2]["first_name"] == "Zoë"
    assert result.summary["contacts"] == 3


def test_utf16_with_bom(place: Place, tmp_path: Path) -> None:
    data = csv_bytes([COLUMNS, ("1", "a@example.com", "Zoë", "X")]).decode().encode("utf-16")
    result = run(place, {"s.csv": data}, "s.csv", tmp_path / "out")
    assert sent(tmp_path / "out") == [
        {"email": "a@example.com", "first_name": "Zoë", "last_name": "X"}
    ]
    assert result.summary["contacts"] == 1


def test_model_json_that_does_not_match_the_csv(place: Place, tmp_path: Path) -> None:
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS),
        f"{RUN}/Seg_1.csv": csv_bytes([("1", "a@example.com", "A")]),
    }
    with pytest.raises(InputError, match=r"has 3 columns but .*model.json lists 4 for Seg"):
        run(place, tree, RUN, tmp_path / "out")


def test_a_folder_without_csv_files(place: Place, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds no \.csv or \.csv\.gz files"):
        run(place, {"dir/readme.txt": b"hi"}, "dir", tmp_path / "out")


def test_duplicates_across_parts(place: Place, tmp_path: Path) -> None:
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS, parts=2),
        f"{RUN}/Seg_1.csv": csv_bytes(people(3)),
        f"{RUN}/Seg_2.csv": csv_bytes(people(2, start=2)),
    }
    result = run(place, tree, RUN, tmp_path / "out")
    assert (result.summary["contacts"], result.summary["duplicates"]) == (3, 2)
    dup_rows = [(r["row"], r["detail"]) for r in rejects(tmp_path / "out")]
    assert dup_rows == [("4", "same email as row 2"), ("5", "same email as row 3")]


def test_values_over_limits_are_cut_and_counted(place: Place, tmp_path: Path) -> None:
    rows = [COLUMNS, ("1", "a@example.com", "F" * 60, "L")]
    result = run(place, {"s.csv": csv_bytes(rows)}, "s.csv", tmp_path / "out")
    assert sent(tmp_path / "out")[0]["first_name"] == "F" * 50
    assert result.summary["truncated"] == {"first_name": 1}


def test_blob_output_is_whole_or_absent(azurite: str, tmp_path: Path) -> None:
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.get_container_client("staging-test")
    container.create_container()
    src = tmp_path / "s.csv"
    src.write_bytes(csv_bytes([COLUMNS, *people(100)]))
    store, name = files.resolve(str(src), None)
    segment = segments.locate(store, name)
    definition = ExportDefinition(list_ids=(LIST,), mapping=MAPPING)
    result = prepare(segment, definition, BlobOutput(container, "runs/r1"), max_body_bytes=2000)
    names = sorted(b.name for b in container.list_blobs())
    assert "runs/r1/summary.json" in names
    assert "runs/r1/rejects.csv" in names
    chunks = [n for n in names if "/chunks/" in n]
    assert chunks == [f"runs/r1/chunks/chunk-{i:05d}.json" for i in range(1, len(chunks) + 1)]
    bodies = [container.download_blob(n).readall() for n in chunks]
    expected = [{"email": e, "first_name": f, "last_name": la} for _i, e, f, la in people(100)]
    checked = check_bodies(bodies, list_ids=[LIST], cap=2000, expected=expected)
    assert len(bodies) > 1
    check_summary(result.summary, checked, 2000)
    small = definition.with_overrides(max_profiles=99)
    with pytest.raises(InputError):
        prepare(segment, small, BlobOutput(container, "runs/r2"), max_body_bytes=2000)
    assert not [b.name for b in container.list_blobs(name_starts_with="runs/r2/")]
    container.delete_container()
