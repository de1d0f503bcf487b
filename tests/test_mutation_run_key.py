"""The run-once key (shared/segments/inbox.py run_key, export_of_run). A run's id must be the same
for the same folder and definition on every delivery of an event and in every version
of ccexport (an event delivered again after an upgrade must find its run), and differ
for anything else. The recipe is the one docs/DEVELOPING.md states: a SHA-256 of a
versioned text naming the export, the container, the folder and the sorted ETags."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from shared.segments.inbox import BlobInfo, RunFolder, export_of_run, run_key

WHEN = datetime(2026, 3, 4, tzinfo=UTC)
STAMP = "2026/03/04/1100"


def folder(
    *etags: str, container: str = "inbox", root: str = "", table: str = "Contacts"
) -> RunFolder:
    parts = tuple(
        BlobInfo(f"{root}HighValue/{table}/{STAMP}/{table}_{i}.csv", etag, WHEN)
        for i, etag in enumerate(etags, 1)
    )
    return RunFolder(container, root, "HighValue", table, STAMP, parts)


def recipe(name: str, container: str, path: str, etags: list[str]) -> str:
    text = "\n".join(["ccexport-run-1", name, container, path, *sorted(etags)])
    return f"{name}.{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def test_the_key_follows_its_recipe() -> None:
    key = run_key("high-value", folder('"0x8DC2"', '"0x8DC1"'))
    assert key == recipe("high-value", "inbox", f"HighValue/Contacts/{STAMP}", ["0x8DC1", "0x8DC2"])
    # pinned: a change of the recipe is a change of every run id (runs started before
    # an upgrade would be started again)
    assert key == "high-value.594a1d3201b0c6c1f1ae1c4363aca4da"


def test_quotes_around_an_etag_do_not_matter() -> None:
    """Azure lists ETags quoted; some clients give them bare. The same blob is one run."""
    assert run_key("e", folder('"0x1"', '"0x2"')) == run_key("e", folder("0x1", "0x2"))
    assert run_key("e", folder('"0x1"')) == recipe(
        "e", "inbox", f"HighValue/Contacts/{STAMP}", ["0x1"]
    )


def test_the_order_of_the_listing_does_not_matter_but_everything_else_does() -> None:
    key = run_key("e", folder('"a"', '"b"'))
    assert run_key("e", folder('"b"', '"a"')) == key
    others = {
        run_key("f", folder('"a"', '"b"')),
        run_key("e", folder('"a"', '"c"')),
        run_key("e", folder('"a"')),
        run_key("e", folder('"a"', '"b"', container="other")),
        run_key("e", folder('"a"', '"b"', root="sub/")),
        run_key("e", folder('"a"', '"b"', table="Leads")),
        run_key("e", folder('"a b"')),  # two ETags are not one with a space
    }
    assert key not in others
    assert len(others) == 7


@pytest.mark.parametrize("name", ["high-value", "a", "x" * 63])
def test_the_export_is_read_back_from_its_key(name: str) -> None:
    key = run_key(name, folder('"1"'))
    name_part, dot, digest = key.partition(".")
    assert (name_part, dot, len(digest)) == (name, ".", 32)
    assert all(c in "0123456789abcdef" for c in digest)
    assert export_of_run(key) == name


@pytest.mark.parametrize(
    "run_id",
    [
        "no-dot",
        "name." + "a" * 31,
        "name." + "a" * 33,
        "." + "a" * 32,
        "",
        "weekly-20260304-1100",  # a command-line run id
    ],
)
def test_ids_not_made_by_run_key_name_no_export(run_id: str) -> None:
    assert export_of_run(run_id) is None
