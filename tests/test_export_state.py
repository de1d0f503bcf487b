"""The export's state file, its keys, its stores, and the comparison prepare makes with it."""

from __future__ import annotations

import uuid
from array import array
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from shared.exports.changes import ChangeTracker, content_hash, segment_names
from shared.exports.definitions import ExportDefinition
from shared.exports.keys import hash8
from shared.exports.state import (
    BlobStateStore,
    ExportState,
    LocalStateStore,
    StateError,
    StateStore,
    as_keys,
    definition_hash,
    email_keys,
    load,
    others_sharing,
    snapshot_arrays,
    state_key,
)
from shared.prepare.outputs import LocalOutput
from shared.prepare.pipeline import prepare
from shared.segments import layout as segments
from shared.storage.files import LocalFiles

LIST_A = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
LIST_B = "0d4c9f8e-2b1a-4c3d-9e8f-7a6b5c4d3e2f"


def keys(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


@pytest.fixture(params=["local", "blob"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "local":
        return LocalStateStore(tmp_path / "state")
    azurite: str = request.getfixturevalue("azurite")
    service = BlobServiceClient.from_connection_string(azurite)
    return BlobStateStore(service.get_container_client(f"reports-{uuid.uuid4().hex[:8]}"))


def test_a_state_round_trips_whole_and_others_are_found_by_list(store: StateStore) -> None:
    state = ExportState(
        {"key": "a", "generation": "g1", "list_ids": [LIST_A], "content_hash": "c"},
        keys(1, 5, 9),
        keys(10, 50, 90),
        {LIST_A: keys(1, 5), LIST_B: keys(9)},
    )
    assert load(store, "a") is None

    store.write("a", state.to_bytes())
    store.write("b", ExportState({"key": "b", "list_ids": [LIST_B]}).to_bytes())

    found = load(store, "a")
    assert found is not None
    assert found.keys.tolist() == [1, 5, 9]
    assert found.digests.tolist() == [10, 50, 90]
    assert {k: v.tolist() for k, v in found.managed.items()} == {LIST_A: [1, 5], LIST_B: [9]}
    assert found.header["contacts"] == 3
    assert found.pending_removals() == 0
    assert store.export_keys() == ["a", "b"]
    assert others_sharing(store, "a", [LIST_A, LIST_B]) == {LIST_A: [], LIST_B: ["b"]}
    assert others_sharing(store, "b", [LIST_A]) == {LIST_A: ["a"]}
    newer = found.successor(run_id="r2")
    assert newer.generation not in {"", "g1"}
    assert newer.header["content_hash"] == "c"


def test_a_damaged_state_file_is_refused(tmp_path: Path) -> None:
    data = ExportState({"key": "a"}, keys(1, 2), keys(3, 4)).to_bytes()
    with pytest.raises(StateError):
        ExportState.from_bytes(data[:-4])
    with pytest.raises(StateError):
        ExportState.from_bytes(b"something else entirely")


def test_keys_are_the_workers_hashes_and_collisions_are_left_out() -> None:
    email = "ana@example.com"
    assert email_keys([email]).tolist() == as_keys(hash8(email.encode())).tolist()
    sorted_keys, digests = snapshot_arrays(keys(7, 3, 7, 1), keys(70, 30, 71, 10))
    assert sorted_keys.tolist() == [1, 3]  # 7 came twice: neither can be told apart
    assert digests.tolist() == [10, 30]


def test_the_state_key_names_the_export_not_the_run_folder() -> None:
    named = state_key("high-value", [LIST_A], "BlobExport", "HighValue")
    assert named == state_key("high-value", [LIST_B], "blobexport", "HIGHVALUE")
    assert named.startswith("high-value-highvalue-")
    assert named != state_key("high-value", [LIST_A], "BlobExport", "Other")
    # without a definition the lists are part of it
    assert state_key(None, [LIST_A], "E", "T") != state_key(None, [LIST_B], "E", "T")
    assert state_key(None, [LIST_A, LIST_B], "E", "T") == state_key(
        None, [LIST_B, LIST_A], "E", "T"
    )


def test_the_definition_hash_follows_lists_mapping_and_encoding_only() -> None:
    base = ExportDefinition(list_ids=(LIST_A,), mapping={"email": "Email"}, name="x")
    same = ExportDefinition(
        list_ids=(LIST_A,), mapping={"email": "Email"}, name="y", mode="mirror", max_profiles=5
    )
    assert definition_hash(base) == definition_hash(same)
    for changed in (
        ExportDefinition(list_ids=(LIST_A, LIST_B), mapping={"email": "Email"}),
        ExportDefinition(list_ids=(LIST_A,), mapping={"email": "Email", "city": "City"}),
        ExportDefinition(list_ids=(LIST_A,), mapping={"email": "Email"}, encoding="cp1252"),
    ):
        assert definition_hash(changed) != definition_hash(base)


def items_of(*contacts: bytes) -> tuple[bytes, array[int]]:
    ends = array("q")
    data = b""
    for contact in contacts:
        data += contact + b","
        ends.append(len(data))
    return data, ends


def test_the_tracker_passes_on_only_new_and_changed_contacts() -> None:
    previous = ExportState({}, *snapshot_arrays(keys(1, 2, 3), keys(10, 20, 30)))
    tracker = ChangeTracker(previous)
    data, ends = items_of(b'{"a":1}', b'{"b":2}', b'{"c":3}', b'{"d":4}')
    # 1 unchanged, 2 changed, 4 new, 3 left
    block_keys = keys(1, 2, 4, 9).astype("<u8").tobytes()
    block_digests = keys(10, 21, 40, 90).astype("<u8").tobytes()

    kept, kept_ends = tracker.select(data, ends, block_keys, block_digests)

    assert kept == b'{"b":2},{"c":3},{"d":4},'
    assert list(kept_ends) == [8, 16, 24]
    counts = tracker.finish()
    assert (counts.added, counts.updated, counts.unchanged, counts.left) == (2, 1, 1, 1)
    assert tracker.keys.tolist() == [1, 2, 4, 9]
    unchanged = ChangeTracker(ExportState({}, tracker.keys, tracker.digests))
    assert unchanged.select(data, ends, block_keys, block_digests) == (b"", array("q"))
    full = ChangeTracker(ExportState({}, tracker.keys, tracker.digests), full=True)
    assert full.select(data, ends, block_keys, block_digests)[0] == data


def write_run(root: Path, stamp: str, rows: list[str]) -> Path:
    folder = root / "BlobExport" / "Members" / "2026" / "11" / "28" / stamp
    folder.mkdir(parents=True)
    (folder / "Members_1.csv").write_text("Email,Name\n" + "".join(f"{r}\n" for r in rows))
    return folder


def test_the_content_hash_is_the_one_prepare_makes_and_ignores_the_folder(tmp_path: Path) -> None:
    rows = [f"p{i}@example.com,P{i}" for i in range(500)]
    first = write_run(tmp_path, "0900", rows)
    second = write_run(tmp_path, "1000", rows)
    changed = write_run(tmp_path, "1100", [*rows[:-1], "p499@example.com,Other"])
    files = LocalFiles(tmp_path)
    located = [segments.locate(files, str(p.relative_to(tmp_path))) for p in (first, second)]
    export = ExportDefinition(list_ids=(LIST_A,), mapping={"email": "Email", "first_name": "Name"})

    result = prepare(located[0], export, LocalOutput(tmp_path / "out"), workers=1, block_bytes=2048)

    def hashed(segment: segments.Segment) -> str:
        return content_hash(segment, max_profiles=export.max_profiles)

    assert result.summary["content_hash"] == hashed(located[0])
    assert hashed(located[1]) == hashed(located[0])
    other = segments.locate(files, str(changed.relative_to(tmp_path)))
    assert hashed(other) != hashed(located[0])
    assert segment_names(located[0]) == segment_names(located[1]) == ("BlobExport", "Members")
