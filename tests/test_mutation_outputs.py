"""Where prepare writes (shared/prepare/outputs.py), file by file: the bodies under their names,
rejects.csv with its header and its formula guard, the summary last, and nothing left
behind by a prepare that failed. The blob output is driven through a container of the
test's own (what it uploads, with which content type, and what it deletes), so no
storage service is needed. A body written under the wrong name, or a rejects cell a
spreadsheet runs, is data lost or a trust broken."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.prepare.outputs import (
    REJECTS_HEADER,
    BlobOutput,
    LocalOutput,
    RejectsWriter,
    chunk_name,
    neutralise,
)


def test_chunk_names_sort_in_order() -> None:
    assert chunk_name(1) == "chunks/chunk-00001.json"
    assert chunk_name(12345) == "chunks/chunk-12345.json"
    names = [chunk_name(i) for i in (10, 9, 100, 1)]
    assert sorted(names) == [chunk_name(i) for i in (1, 9, 10, 100)]


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=b", "a=b"),
        ("ana@example.com", "ana@example.com"),
        ("", ""),
        ("'quoted", "'quoted"),
    ],
)
def test_cells_a_spreadsheet_would_run_are_neutralised(cell: str, written: str) -> None:
    assert neutralise(cell) == written


def test_rejects_rows_have_the_header_crlf_and_neutralised_text() -> None:
    stream = io.StringIO(newline="")
    writer = RejectsWriter(stream)
    writer.write(row=7, file="=evil.csv", line=9, email="-a@b.co", reason="invalid_email")
    writer.write(row=8, file="p.csv", line=10, email="x@y.co", reason="duplicate", detail="@row 3")
    text = stream.getvalue()
    assert text.startswith("row,file,line,email,reason,detail\r\n")
    assert text.count("\r\n") == 3
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == REJECTS_HEADER
    assert rows[1] == ["7", "'=evil.csv", "9", "'-a@b.co", "invalid_email", ""]
    assert rows[2] == ["8", "p.csv", "10", "x@y.co", "duplicate", "'@row 3"]


def test_the_reason_is_written_as_it_is() -> None:
    stream = io.StringIO(newline="")
    RejectsWriter(stream).write(row=1, file="f", line=2, email="e", reason="=reason")
    assert list(csv.reader(io.StringIO(stream.getvalue())))[1][4] == "=reason"


# --- a local folder ----------------------------------------------------------------------------


def test_local_output_appears_only_when_committed(tmp_path: Path) -> None:
    target = tmp_path / "out" / "nested"
    output = LocalOutput(target)
    assert target.is_dir()
    assert output.write_chunk(1, b'{"one":1}') == "chunks/chunk-00001.json"
    assert output.write_chunk(2, b'{"two":2}') == "chunks/chunk-00002.json"
    assert output.write_file("keys.npy", b"KEYS") == "keys.npy"
    RejectsWriter(output.rejects_stream()).write(
        row=1, file="a.csv", line=2, email="bad", reason="invalid_email"
    )
    assert output.rejects_stream() is output.rejects_stream()  # one stream
    visible = {p.name for p in target.iterdir() if not p.name.startswith(".")}
    assert visible == set()  # nothing before the commit
    # the work is a hidden folder in the target, so the commit is a rename in place
    (work,) = target.iterdir()
    assert work.name.startswith(".ccexport-")
    assert (work / "chunks" / "chunk-00001.json").read_bytes() == b'{"one":1}'
    where = output.commit({"contacts": 2, "name": "Anaïs"})
    assert where == str(target)
    assert sorted(p.name for p in target.iterdir()) == [
        "chunks",
        "keys.npy",
        "rejects.csv",
        "summary.json",
    ]  # and no hidden work folder left
    assert (target / "chunks" / "chunk-00002.json").read_bytes() == b'{"two":2}'
    assert (target / "keys.npy").read_bytes() == b"KEYS"
    summary = (target / "summary.json").read_bytes()
    assert orjson.loads(summary) == {"contacts": 2, "name": "Anaïs"}
    assert summary == orjson.dumps({"contacts": 2, "name": "Anaïs"}, option=orjson.OPT_INDENT_2)
    assert (target / "rejects.csv").read_bytes().startswith(b"row,file,line,email")


def test_a_new_commit_replaces_the_last_output_whole(tmp_path: Path) -> None:
    first = LocalOutput(tmp_path)
    for i in (1, 2, 3):
        first.write_chunk(i, b"old")
    first.write_file("keys.npy", b"old")
    first.rejects_stream().write("old rejects")
    first.commit({"run": 1})
    second = LocalOutput(tmp_path)
    second.write_chunk(1, b"new")
    second.commit({"run": 2})
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == ["chunk-00001.json"]
    assert (tmp_path / "chunks" / "chunk-00001.json").read_bytes() == b"new"
    assert orjson.loads((tmp_path / "summary.json").read_bytes()) == {"run": 2}
    assert (tmp_path / "rejects.csv").read_text() == ""  # this output's (empty) rejects
    assert (tmp_path / "keys.npy").read_bytes() == b"old"  # not this output's file


def test_an_aborted_local_output_leaves_nothing(tmp_path: Path) -> None:
    output = LocalOutput(tmp_path)
    output.write_chunk(1, b"x")
    output.rejects_stream().write("half a row")
    output.abort()
    assert list(tmp_path.iterdir()) == []
    output.abort()  # again (a failure while cleaning up must not hide the first one)
    LocalOutput(tmp_path / "quiet").abort()  # no stream opened: nothing to close
    assert list((tmp_path / "quiet").iterdir()) == []


# --- blobs ----------------------------------------------------------------------------------------


class Container:
    """A blob container in memory, as much of it as BlobOutput uses."""

    container_name = "exports"

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}
        self.log: list[str] = []

    def upload_blob(
        self, name: str, data: bytes | IO[bytes], *, overwrite: bool, content_settings: Any
    ) -> None:
        assert overwrite
        raw = data if isinstance(data, bytes) else data.read()
        self.blobs[name] = (raw, content_settings.content_type)
        self.log.append(f"put {name}")

    def delete_blob(self, name: str) -> None:
        self.log.append(f"delete {name}")
        if self.blobs.pop(name, None) is None:
            raise ResourceNotFoundError("no such blob")


def test_blob_output_writes_the_summary_last_with_content_types() -> None:
    container = Container()
    output = BlobOutput(container, "/runs/r1/")  # type: ignore[arg-type]
    assert output.write_chunk(1, b'{"a":1}') == "chunks/chunk-00001.json"
    assert output.write_file("keys.npy", b"KEYS") == "keys.npy"
    RejectsWriter(output.rejects_stream()).write(
        row=3, file="p.csv", line=4, email="=x@y.co", reason="invalid_email"
    )
    where = output.commit({"contacts": 1})
    assert where == "az://exports/runs/r1"
    assert container.log == [
        "put runs/r1/chunks/chunk-00001.json",
        "put runs/r1/keys.npy",
        "put runs/r1/rejects.csv",
        "put runs/r1/summary.json",
    ]
    assert container.blobs["runs/r1/chunks/chunk-00001.json"] == (b'{"a":1}', "application/json")
    assert container.blobs["runs/r1/keys.npy"] == (b"KEYS", "application/octet-stream")
    rejects, kind = container.blobs["runs/r1/rejects.csv"]
    assert kind == "text/csv; charset=utf-8"
    assert rejects == b"row,file,line,email,reason,detail\r\n3,p.csv,4,'=x@y.co,invalid_email,\r\n"
    summary, kind = container.blobs["runs/r1/summary.json"]
    assert (orjson.loads(summary), kind) == ({"contacts": 1}, "application/json")
    assert summary == orjson.dumps({"contacts": 1}, option=orjson.OPT_INDENT_2)


def test_rejects_past_eight_megabytes_spill_to_disk_and_still_arrive_whole() -> None:
    container = Container()
    output = BlobOutput(container, "runs/big")  # type: ignore[arg-type]
    writer = RejectsWriter(output.rejects_stream())
    long_detail = "d" * (9 << 20)  # one cell past the 8 MB kept in memory
    writer.write(row=1, file="p.csv", line=2, email="a@b.co", reason="r", detail=long_detail)
    writer.write(row=2, file="p.csv", line=3, email="é@b.co", reason="r")
    output.commit({})
    rejects = container.blobs["runs/big/rejects.csv"][0]
    assert len(rejects) > 9 << 20
    assert rejects.endswith("2,p.csv,3,é@b.co,r,\r\n".encode())


def test_only_the_slashes_around_the_prefix_go() -> None:
    container = Container()
    output = BlobOutput(container, "/Xruns/weekly.X/")  # type: ignore[arg-type]
    output.write_chunk(1, b"x")
    assert output.commit({}) == "az://exports/Xruns/weekly.X"
    assert "Xruns/weekly.X/chunks/chunk-00001.json" in container.blobs


def test_without_a_prefix_blobs_sit_at_the_top() -> None:
    container = Container()
    output = BlobOutput(container, "")  # type: ignore[arg-type]
    output.write_chunk(3, b"x")
    assert output.commit({}) == "az://exports/"
    assert sorted(container.blobs) == ["chunks/chunk-00003.json", "rejects.csv", "summary.json"]


def test_an_aborted_blob_output_deletes_what_it_uploaded() -> None:
    container = Container()
    container.blobs["runs/r1/other.json"] = (b"keep", "application/json")
    output = BlobOutput(container, "runs/r1")  # type: ignore[arg-type]
    output.write_chunk(1, b"x")
    output.write_chunk(2, b"y")
    del container.blobs["runs/r1/chunks/chunk-00001.json"]  # gone already: no matter
    output.abort()
    assert container.blobs == {"runs/r1/other.json": (b"keep", "application/json")}
    assert container.log[-2:] == [
        "delete runs/r1/chunks/chunk-00001.json",
        "delete runs/r1/chunks/chunk-00002.json",
    ]
    with pytest.raises(ValueError, match="closed"):
        output.rejects_stream().write("x")
