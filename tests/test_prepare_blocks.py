"""Blocks and workers change nothing: prepare cut into tiny blocks, in worker processes,
writes byte for byte what one in-process pass over each whole file writes."""

from __future__ import annotations

import dataclasses
import random
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.constant_contact.contacts import ContactMapper
from shared.errors import InputError
from shared.exports.definitions import ExportDefinition
from shared.prepare.outputs import LocalOutput
from shared.prepare.pipeline import Workers, _ordered_results, prepare
from shared.prepare.results import BlockResult
from shared.prepare.rows import map_block
from shared.segments import layout as segments
from shared.segments.blocks import Block, part_blocks
from shared.storage import files
from tests.support.body_checks import Contact, check_bodies, check_summary, chunk_files
from tests.support.segment_trees import RUN, csv_bytes, gz, model_json

LIST = "6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b"
COLUMNS = ("CustomerId", "Email", "FirstName", "Notes")
MAPPING = {"email": "Email", "first_name": "FirstName", "cf:notes": "Notes"}


def tricky_rows(n: int, seed: int) -> list[tuple[str, ...]]:
    """Rows with quoted line breaks, quotes, commas, bad and repeated emails."""
    rng = random.Random(seed)
    rows: list[tuple[str, ...]] = []
    for i in range(n):
        email = f"p{i}@example.com"
        roll = rng.random()
        if roll < 0.05:
            email = f"P{rng.randrange(max(i, 1))}@Example.com"  # a duplicate, maybe far back
        elif roll < 0.08:
            email = "broken"
        notes = rng.choice(["", "plain", 'say "hi"', "a,b", "two\nlines", "three\r\nline\nbreaks"])
        rows.append((str(i), email, rng.choice(["Zoë", "Anaïs", "Bob", ""]), notes))
    return rows


def write(root: Path, tree: dict[str, bytes]) -> None:
    for name, data in tree.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def expected_contacts(rows: list[tuple[str, ...]]) -> list[Contact]:
    """What tricky_rows must send, worked out here: every address but "broken", in
    lower case, from the first row that has it; empty values left out."""
    kept: dict[str, Contact] = {}
    for _id, email, first, notes in rows:
        address = email.lower()
        if email != "broken" and address not in kept:
            values = {"first_name": first, "cf:notes": notes}
            kept[address] = {"email": address, **{k: v for k, v in values.items() if v}}
    return list(kept.values())


def outcome(
    root: Path, source: str, out: Path, *, rows: list[tuple[str, ...]] | None = None, **kw: Any
) -> dict[str, Any]:
    """The prepare's summary, bodies and rejects; every body checked (tests/support/body_checks.py)
    and, given the segment's ``rows``, holding exactly the contacts they make."""
    store, name = files.resolve(str(root / source), None)
    segment = segments.locate(store, name)
    export = ExportDefinition(list_ids=(LIST,), mapping=MAPPING)
    summary = prepare(segment, export, LocalOutput(out), max_body_bytes=3000, **kw).summary
    expected = None if rows is None else expected_contacts(rows)
    chunks = chunk_files(out)
    checked = check_bodies(chunks, list_ids=[LIST], cap=3000, expected=expected)
    check_summary(summary, checked, 3000)
    for volatile in ("elapsed_seconds", "workers", "worker_kind", "blocks", "columnar_blocks"):
        summary.pop(volatile)
    return {"summary": summary, "chunks": chunks, "rejects": (out / "rejects.csv").read_bytes()}


@pytest.mark.parametrize("block_bytes", [64, 301, 4096])
def test_blocks_in_workers_match_one_pass(tmp_path: Path, block_bytes: int) -> None:
    rows = tricky_rows(1500, seed=block_bytes)
    tree = {
        "ci/BlobExport/model.json": model_json(COLUMNS, parts=3),
        f"{RUN}/Seg_1.csv": b"\xef\xbb\xbf" + csv_bytes(rows[:700]),
        f"{RUN}/Seg_2.csv.gz": gz(csv_bytes(rows[700:1400], newline="\n")),
        f"{RUN}/Seg_3.csv": csv_bytes(rows[1400:]),
    }
    write(tmp_path / "in", tree)
    one_pass = outcome(
        tmp_path / "in", RUN, tmp_path / "a", rows=rows, workers=1, block_bytes=1 << 30
    )
    blocks = outcome(
        tmp_path / "in", RUN, tmp_path / "b", rows=rows, workers=2, block_bytes=block_bytes
    )
    assert blocks == one_pass
    s = one_pass["summary"]
    assert s["rows_read"] == 1500 == s["contacts"] + s["rejected"] + s["duplicates"]
    assert s["duplicates"] > 30
    sent = [c for body in one_pass["chunks"] for c in orjson.loads(body)["import_data"]]
    assert len(sent) == s["contacts"]
    assert len({c["email"] for c in sent}) == len(sent)
    assert any("\n" in c.get("cf:notes", "") for c in sent)


def test_header_rows_in_every_part_with_small_blocks(tmp_path: Path) -> None:
    rows = tricky_rows(400, seed=9)
    tree = {
        "s/a_1.csv": csv_bytes([COLUMNS, *rows[:200]]),
        "s/a_2.csv": csv_bytes([COLUMNS, *rows[200:]]),
    }
    write(tmp_path / "in", tree)
    one_pass = outcome(
        tmp_path / "in", "s", tmp_path / "a", rows=rows, workers=1, block_bytes=1 << 30
    )
    blocks = outcome(tmp_path / "in", "s", tmp_path / "b", rows=rows, workers=2, block_bytes=100)
    assert blocks == one_pass
    assert one_pass["summary"]["rows_read"] == 400


def test_errors_from_a_worker_name_the_line(tmp_path: Path) -> None:
    rows = csv_bytes([COLUMNS, *tricky_rows(300, seed=4)])
    write(tmp_path / "in", {"s.csv": rows + "x,bad@example.com,Zoë,x\n".encode("cp1252")})
    lines = rows.count(b"\n")
    with pytest.raises(InputError, match=f"cannot decode line {lines + 1} as UTF-8"):
        outcome(tmp_path / "in", "s.csv", tmp_path / "o", workers=2, block_bytes=500)
    assert list((tmp_path / "o").iterdir()) == []


def test_profile_limit_with_workers(tmp_path: Path) -> None:
    write(tmp_path / "in", {"s.csv": csv_bytes([COLUMNS, *tricky_rows(300, seed=5)])})
    store, name = files.resolve(str(tmp_path / "in" / "s.csv"), None)
    export = ExportDefinition(list_ids=(LIST,), mapping=MAPPING, max_profiles=299)
    with pytest.raises(InputError, match="more than 299 profiles"):
        prepare(segments.locate(store, name), export, LocalOutput(tmp_path / "o"),
                workers=2, block_bytes=200)  # fmt: skip
    assert list((tmp_path / "o").iterdir()) == []


class _BreaksAfter:
    """A real pool whose workers stop after a few blocks, as a killed worker would."""

    def __init__(self, blocks: int) -> None:
        self.pool = ProcessPoolExecutor(1)
        self._left = blocks

    def submit(self, block: Block) -> Future[BlockResult]:
        self._left -= 1
        if self._left < 0:
            raise BrokenProcessPool("a worker stopped")
        return self.pool.submit(map_block, _MAPPER, block)


_MAPPER = ContactMapper(COLUMNS, MAPPING)


def test_a_broken_pool_falls_back_to_this_process(tmp_path: Path) -> None:
    rows = tricky_rows(600, seed=11)
    write(tmp_path / "in", {"s.csv": csv_bytes([COLUMNS, *rows])})
    store, name = files.resolve(str(tmp_path / "in" / "s.csv"), None)
    segment = segments.locate(store, name)
    blocks = list(part_blocks(segment, segment.parts[0], 400))
    blocks[0] = dataclasses.replace(blocks[0], skip_header=True)
    expected = [r.records for _b, r in _ordered_results(iter(blocks), _MAPPER, [], depth=2)]
    pool = _BreaksAfter(3)
    in_use: list[Workers] = [pool]
    try:
        got = [r.records for _b, r in _ordered_results(iter(blocks), _MAPPER, in_use, depth=2)]
    finally:
        pool.pool.shutdown()
    assert in_use == []  # the caller can tell the pool was given up
    assert got == expected
    assert sum(got) == 600


def test_the_row_path_alone_writes_the_same(tmp_path: Path) -> None:
    """The row path alone (fast=False) writes the same bytes as the columnar path."""
    rows = tricky_rows(900, seed=21)
    clean = [r for r in rows if "\n" not in r[3]][:600]  # mostly blocks the fast path takes
    write(
        tmp_path / "in",
        {"s/a_1.csv": csv_bytes([COLUMNS, *clean]), "s/a_2.csv": csv_bytes([COLUMNS, *rows])},
    )
    both = [*clean, *rows]
    fast = outcome(tmp_path / "in", "s", tmp_path / "a", rows=both, workers=2, block_bytes=2000)
    rows_only = outcome(
        tmp_path / "in", "s", tmp_path / "b", rows=both, workers=2, block_bytes=2000, fast=False
    )
    assert fast == rows_only
    assert fast["summary"]["rows_read"] == len(clean) + len(rows)
    written = [orjson.loads((tmp_path / out / "summary.json").read_bytes()) for out in "ab"]
    # clean blocks went to threads and the others to processes; no thread without fast
    assert [s["worker_kind"] for s in written] == ["threads and processes", "processes"]
    assert 0 < written[0]["columnar_blocks"] < written[0]["blocks"]  # clean ones, not all
    assert written[1]["columnar_blocks"] == 0


def test_a_clean_file_starts_no_process(tmp_path: Path) -> None:
    rows = [r for r in tricky_rows(900, seed=4) if "\n" not in r[3] and "\r" not in r[3]]
    write(tmp_path / "in", {"s/a_1.csv": csv_bytes([COLUMNS, *rows])})
    outcome(tmp_path / "in", "s", tmp_path / "a", rows=rows, workers=2, block_bytes=2000)
    summary = orjson.loads((tmp_path / "a" / "summary.json").read_bytes())
    assert summary["worker_kind"] == "threads"
    assert summary["columnar_blocks"] == summary["blocks"] > 1
