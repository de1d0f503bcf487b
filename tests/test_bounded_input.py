"""Segment files and definitions are read in bounded memory and linear time, and their
errors quote no data: a part with no line break, a gzip that inflates without end, a
quoted value that never closes, an oversized model.json or definition, a codec that
is not a text encoding, and a headerless part whose first row is a person's data.

The bombs run `ccexport prepare` in a child process (bench/gzip_bomb.py) so that its
peak memory is measured, not this process's.
"""

from __future__ import annotations

import gzip
import re
import time
from pathlib import Path

import orjson
import pytest

from bench.gzip_bomb import run_prepare, write_bomb
from shared.errors import ConfigError, InputError
from shared.exports import definitions as exports
from shared.exports.changes import content_hash
from shared.exports.state import ExportState, LocalStateStore, definition_hash
from shared.prepare.outputs import LocalOutput
from shared.prepare.pipeline import prepare
from shared.runs.next_state import baseline, run_state_key, skip_unchanged
from shared.segments import blocks
from shared.segments import layout as segments
from shared.segments.blocks import MAX_LINE_BYTES, part_blocks, text_encoding
from shared.storage import files

LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"


def _segment(path: Path, encoding: str | None = None) -> segments.Segment:
    return segments.locate(files.LocalFiles(path.parent), path.name, encoding=encoding)


def _prepare(path: Path, out: Path, mapping: dict[str, str], **options: object) -> None:
    export = exports.ExportDefinition(list_ids=(LIST,), mapping=mapping, **options)  # type: ignore[arg-type]
    prepare(_segment(path), export, LocalOutput(out), workers=1)


# -- no line break, and gzip bombs: bounded time and memory ----------------------------------


def test_a_gzip_of_64_mb_without_a_line_break_is_refused_fast_in_little_memory(
    tmp_path: Path,
) -> None:
    bomb = tmp_path / "Seg_1.csv.gz"
    write_bomb(bomb, 64 << 20)
    elapsed, peak_mb, code, message = run_prepare(bomb, tmp_path / "out")
    assert code == 2, message
    assert message == (
        f"ccexport: error: {bomb}: line 1 is longer than 16 MB: "
        "the file is not CSV, or a line break is missing"
    )
    assert elapsed < 5, elapsed
    assert peak_mb < 150, peak_mb


def test_a_long_line_after_short_ones_is_refused_with_its_line_number(tmp_path: Path) -> None:
    part = tmp_path / "Seg_1.csv"
    part.write_bytes(b"Email\na@example.com\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\nb@x.org\n")
    with pytest.raises(InputError, match=r"Seg_1\.csv: line 3 is longer than 16 MB"):
        list(part_blocks(_segment(part), _segment(part).parts[0], 1 << 20))


def test_lines_up_to_the_limit_are_read_whole(tmp_path: Path) -> None:
    part = tmp_path / "Seg_1.csv"
    long_line = b"y" * (MAX_LINE_BYTES - 1) + b"\n"
    part.write_bytes(b"Email\n" + long_line + b"c@example.com\n")
    data = b"".join(b.data for b in part_blocks(_segment(part), _segment(part).parts[0], 1 << 20))
    assert data == part.read_bytes()


def test_a_gzip_bomb_with_line_breaks_stops_at_the_part_cap(tmp_path: Path) -> None:
    bomb = tmp_path / "Seg_1.csv.gz"
    # 256 MB of 1 MB lines after a header, in 256 KB of gzip: rows too few for max_profiles
    write_bomb(bomb, 256 << 20, line_every=1 << 20, head=b"Email\n")
    elapsed, peak_mb, code, message = run_prepare(bomb, tmp_path / "out", "--max-profiles", "1000")
    assert code == 2, message
    assert message.startswith(f"ccexport: error: {bomb}: more than 64 MB once decompressed")
    assert elapsed < 10, elapsed
    assert peak_mb < 300, peak_mb


def test_the_part_cap_follows_max_profiles(tmp_path: Path) -> None:
    assert blocks.part_byte_limit(1) == blocks.MIN_PART_BYTES
    assert blocks.part_byte_limit(1_000_000) == 1_000_000 * blocks.PART_BYTES_PER_PROFILE
    part = tmp_path / "Seg_1.csv.gz"
    part.write_bytes(gzip.compress(b"Email\n" + b"\n" * (3 << 20)))
    segment = _segment(part)
    with pytest.raises(InputError) as caught:
        list(part_blocks(segment, segment.parts[0], 1 << 16, max_bytes=2 << 20))
    assert str(caught.value) == (
        f"{part}: more than 2 MB once decompressed, the most one part may hold for the "
        "export's max_profiles; raise max_profiles in the export definition or split the "
        "segment into more parts"
    )


def _bomb_in_a_run_folder(root: Path) -> Path:
    """256 MB of 1 MB lines after a header, in 256 KB of gzip, as a segment's one part."""
    folder = root / "Exp" / "Seg" / "2026" / "11" / "28" / "0930"
    folder.mkdir(parents=True)
    bomb = folder / "Seg_1.csv.gz"
    write_bomb(bomb, 256 << 20, line_every=1 << 20, head=b"Email\n")
    return bomb


def test_the_content_hash_stops_at_the_part_cap_too(tmp_path: Path) -> None:
    bomb = _bomb_in_a_run_folder(tmp_path)
    segment = segments.locate(files.LocalFiles(tmp_path), "Exp/Seg/2026/11/28/0930")
    started = time.perf_counter()
    with pytest.raises(InputError) as caught:
        content_hash(segment, max_profiles=1000)
    elapsed = time.perf_counter() - started
    assert str(caught.value) == (
        f"{bomb}: more than 64 MB once decompressed, the most one part may hold for the "
        "export's max_profiles; raise max_profiles in the export definition or split the "
        "segment into more parts"
    )
    assert elapsed < 5, elapsed  # 64 MB inflated and hashed, never the 256


def test_a_run_with_a_last_snapshot_refuses_the_bomb_before_hashing_it_whole(
    tmp_path: Path,
) -> None:
    """The unchanged-segment check (shared/runs/next_state.py) hashes the segment before
    prepare reads it, whenever the export has a snapshot to compare with: the first
    reader of a run's parts, and it is capped as prepare is."""
    bomb = _bomb_in_a_run_folder(tmp_path / "inbox")
    segment = segments.locate(files.LocalFiles(tmp_path / "inbox"), "Exp/Seg/2026/11/28/0930")
    export = exports.ExportDefinition(
        list_ids=(LIST,), mapping={"email": "Email"}, max_profiles=1000
    )
    states = LocalStateStore(tmp_path / "state")
    key = run_state_key(export, segment)
    last = {"key": key, "generation": "g1", "definition_hash": definition_hash(export)}
    states.write(key, ExportState({**last, "content_hash": "0" * 32}).to_bytes())
    base = baseline(states, export, segment)
    assert base.comparable  # so the segment's bytes are hashed first
    started = time.perf_counter()
    with pytest.raises(InputError, match=f"^{re.escape(str(bomb))}: more than 64 MB once"):
        skip_unchanged(base, segment, LocalOutput(tmp_path / "out"))
    assert time.perf_counter() - started < 5


def test_prepare_caps_each_part_by_max_profiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocks, "MIN_PART_BYTES", 1 << 20)
    part = tmp_path / "Seg_1.csv"
    part.write_bytes(b"Email\na@example.com\n" + b"\n" * (2 << 20))  # blank lines are no rows
    with pytest.raises(InputError, match="more than 1 MB once decompressed"):
        _prepare(part, tmp_path / "out", {"email": "Email"}, max_profiles=10)


def test_an_unclosed_quote_stops_past_the_field_limit_in_linear_time(tmp_path: Path) -> None:
    part = tmp_path / "Seg_1.csv"
    line = b"a@example.com,x\n"
    part.write_bytes(b"Email,Note\n" + b'b@example.com,"open\n' + line * ((20 << 20) // len(line)))
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"Seg_1\.csv: .*line 2.*(16 MB|field limit)"):
        _prepare(part, tmp_path / "out", {"email": "Email"})
    # joined one block at a time, the growing value was parsed and checked once for each
    # of the 30-odd blocks it spans; doubled, about six times
    assert time.perf_counter() - started < 12


# -- sizes of model.json and definitions -------------------------------------------------------


def test_an_oversized_model_json_is_refused_unparsed(tmp_path: Path) -> None:
    run = tmp_path / "Exp" / "Seg" / "2026" / "11" / "28" / "0930"
    run.mkdir(parents=True)
    (run / "Seg_1.csv").write_bytes(b"a@example.com\n")
    (tmp_path / "Exp" / "model.json").write_bytes(b" " * (segments.MODEL_MAX_BYTES + 1) + b"{}")
    with pytest.raises(InputError) as caught:
        segments.locate(files.LocalFiles(tmp_path), "Exp/Seg/2026/11/28/0930")
    assert str(caught.value).endswith(
        "model.json is larger than 16 MB: not a model.json that Customer Insights writes"
    )


def test_an_oversized_definition_is_refused(tmp_path: Path) -> None:
    big = {"list_ids": [LIST], "mapping": {"email": "E"}, "description": "d" * (64 << 10)}
    path = tmp_path / "export.json"
    path.write_bytes(orjson.dumps(big))
    message = f"{path}: larger than 64 KB, which no export definition needs"
    with pytest.raises(ConfigError) as caught:
        exports.load(path)
    assert str(caught.value) == message
    with pytest.raises(ConfigError, match="larger than 64 KB"):
        exports.from_json(big)  # what the HTTP API and the catalog hand over
    assert exports.from_json({**big, "description": "d" * 1000}).description == "d" * 1000


# -- encodings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["zlib_codec", "rot13", "base64", "hex_codec"])
def test_a_codec_that_is_not_a_text_encoding_is_a_one_line_error(
    tmp_path: Path, codec: str
) -> None:
    expected = f'encoding "{codec}" is not a text encoding; use one such as "utf-8" or "cp1252"'
    with pytest.raises(ConfigError) as caught:
        exports.from_json({"list_ids": [LIST], "mapping": {"email": "E"}, "encoding": codec})
    assert str(caught.value) == f"export definition: {expected}"
    part = tmp_path / "Seg_1.csv"
    part.write_bytes(b"E\na@example.com\n")
    segment = _segment(part, encoding=codec)  # as model.json could name it
    with pytest.raises(InputError) as raised:
        list(part_blocks(segment, segment.parts[0]))
    assert str(raised.value) == expected


def test_text_encodings_are_accepted() -> None:
    assert text_encoding("cp1252") == "cp1252"
    assert text_encoding("UTF-16-LE") == "utf-16-le"
    with pytest.raises(InputError, match='unknown encoding "klingon"'):
        text_encoding("klingon")


# -- no personal data in the missing-column error ------------------------------------------------


def test_a_headerless_part_is_described_in_shape_not_quoted(tmp_path: Path) -> None:
    part = tmp_path / "Seg_1.csv"
    row = ["1042", "ada.lovelace@example.com", "Ada", "Lovelace", "London"]
    part.write_bytes((",".join(row) + "\n" + "2,b@example.com,Bo,Li,Oslo\n").encode())
    with pytest.raises(InputError) as caught:
        _prepare(part, tmp_path / "out", {"email": "PrimaryEmail", "first_name": "FirstName"})
    message = str(caught.value)
    assert "@" not in message
    assert not [value for value in row if value in message]
    assert message == (
        f"{part}: without model.json the first row must name the columns, but it looks like "
        "data (5 values, one of them an email address, one of them a number or a date); the "
        'mapping needs "PrimaryEmail", "FirstName": add a header row, or put the export\'s '
        "model.json above the run folder"
    )
    assert "\n" not in message


def test_a_first_row_of_plain_words_is_not_quoted_either(tmp_path: Path) -> None:
    part = tmp_path / "Seg_1.csv"
    part.write_bytes(b"Ada,Lovelace,Mailer\nBo,Li,Post\n")
    with pytest.raises(InputError) as caught:
        _prepare(part, tmp_path / "out", {"email": "PrimaryEmail"})
    assert "Ada" not in str(caught.value)
    assert "Lovelace" not in str(caught.value)
    assert "names none of the mapped columns (3 values)" in str(caught.value)


def test_a_certain_header_still_lists_its_columns(tmp_path: Path) -> None:
    part = tmp_path / "Seg_1.csv"
    part.write_bytes(b"PrimaryEmail,GivenName\na@example.com,Ada\n")
    with pytest.raises(InputError) as caught:
        _prepare(part, tmp_path / "out", {"email": "PrimaryEmail", "first_name": "FirstName"})
    assert str(caught.value) == (
        'column "FirstName" (mapped to first_name) is not in the file; '
        "its columns are: PrimaryEmail, GivenName"
    )
