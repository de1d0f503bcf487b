"""What every import request body must be, checked from the bodies alone.

Constant Contact imports at most 40,000 contacts a request and *silently drops* what
lies past the first 4 MB of a body (ccexport reads 4 MB as 4,000,000 bytes and packs
to a lower cap, 3,900,000 bytes by default). A body past either limit loses contacts
with no error anywhere, so every test that prepares bodies checks each one here.

Everything is computed by this module from the bytes: parsed with the standard
``json`` module (not orjson), counted, measured with ``len``; the lower bound on the
number of bodies is worked out here from the contacts' own sizes. Nothing is taken
from the packer (shared/prepare/chunks.py) or its figures, so a packer that gets a limit
wrong cannot also get the expectation wrong.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Constant Contact's limits (v3 bulk import, "contacts_json_import"), written out here
# rather than imported: the product's constants are what is under test.
CC_BYTES_LIMIT = 4_000_000
CC_CONTACTS_LIMIT = 40_000
DEFAULT_CAP = 3_900_000  # the cap ccexport promises to pack to (README, shared/prepare/chunks.py)

Contact = dict[str, Any]


def compact(value: Any) -> bytes:
    """JSON as a body holds it: no spaces, UTF-8 as is (not \\u escapes)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def overhead(list_ids: Sequence[str]) -> int:
    """The bytes of a body that holds no contact."""
    return len(compact({"import_data": [], "list_ids": list(list_ids)}))


def room(list_ids: Sequence[str], cap: int) -> int:
    """What a body of at most ``cap`` bytes has for its contacts, each counted with one
    comma: k contacts take overhead + their bytes + (k - 1) commas <= cap."""
    return cap - overhead(list_ids) + 1


def fewest_bodies(
    contact_bytes: int,
    contacts: int,
    list_ids: Sequence[str],
    cap: int,
    max_contacts: int = CC_CONTACTS_LIMIT,
) -> int:
    """A lower bound on the bodies any packing needs for ``contacts`` contacts of
    ``contact_bytes`` bytes in all (serialised): by bytes, each contact and its comma
    out of a body's ``room``; by count, ``max_contacts`` a body."""
    if not contacts:
        return 0
    by_bytes = math.ceil((contact_bytes + contacts) / room(list_ids, cap))
    return max(by_bytes, math.ceil(contacts / max_contacts))


@dataclass(frozen=True)
class Checked:
    contacts: list[Contact]  # every body's contacts, in order
    counts: list[int]  # contacts in each body
    sizes: list[int]  # bytes of each body
    list_ids: Sequence[str]

    @property
    def contact_bytes(self) -> int:
        """The bytes of all contacts, without commas: each body less its overhead and
        commas (exact: every body was found to be compact JSON)."""
        return (
            sum(self.sizes)
            - len(self.sizes) * overhead(self.list_ids)
            - sum(k - 1 for k in self.counts)
        )

    def fewest(self, cap: int, max_contacts: int = CC_CONTACTS_LIMIT) -> int:
        """The lower bound on bodies for these contacts under ``cap``."""
        return fewest_bodies(
            self.contact_bytes, len(self.contacts), self.list_ids, cap, max_contacts
        )


def check_bodies(
    bodies: Sequence[bytes],
    *,
    list_ids: Sequence[str],
    cap: int = DEFAULT_CAP,
    expected: Sequence[Mapping[str, Any]] | None = None,
    max_contacts: int = CC_CONTACTS_LIMIT,
) -> Checked:
    """Fail unless every body is one Constant Contact takes whole, and they hold ``expected``.

    Each body: at most ``cap`` bytes (and 4,000,000), valid JSON of exactly
    ``{"import_data": [...], "list_ids": list_ids}`` written compactly, holding 1 to
    ``max_contacts`` (at most 40,000) contacts. Together: each email once, and when
    ``expected`` is given exactly those contacts, in that order: nothing lost, nothing
    twice. And full: bodies are filled in order, so each body but the last was closed
    only because it held ``max_contacts`` or the next contact would not have fitted.
    """
    assert cap <= CC_BYTES_LIMIT, f"a cap of {cap:,} bytes is past what Constant Contact reads"
    contacts: list[Contact] = []
    counts: list[int] = []
    sizes: list[int] = []
    firsts: list[Contact] = []
    for n, body in enumerate(bodies, 1):
        size = len(body)
        assert size <= cap, f"body {n} is {size:,} bytes, over the cap of {cap:,}"
        assert size <= CC_BYTES_LIMIT, f"body {n} is {size:,} bytes, past 4 MB"
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            pytest.fail(f"body {n} is not valid JSON: {exc}")
        assert isinstance(parsed, dict), f"body {n} is not a JSON object"
        assert list(parsed) == ["import_data", "list_ids"], f"body {n} has keys {list(parsed)}"
        assert parsed["list_ids"] == list(list_ids), f"body {n} names lists {parsed['list_ids']}"
        data = parsed["import_data"]
        assert isinstance(data, list), f"body {n}: import_data is not a list"
        assert 0 < len(data) <= min(max_contacts, CC_CONTACTS_LIMIT), (
            f"body {n} holds {len(data):,} contacts (at most {max_contacts:,}, never empty)"
        )
        assert all(isinstance(c, dict) and isinstance(c.get("email"), str) for c in data), (
            f"body {n} holds a contact without an email"
        )
        # Compact, so the sizes measured below are the bytes the body spends on each.
        assert compact(parsed) == body, f"body {n} is not compact JSON"
        contacts.extend(data)
        counts.append(len(data))
        sizes.append(size)
        firsts.append(data[0])
    seen = Counter(c["email"] for c in contacts)
    twice = sorted(e for e, k in seen.items() if k > 1)
    assert not twice, f"{len(twice)} emails are sent more than once, e.g. {twice[:3]}"
    if expected is not None:
        _same_contacts(contacts, expected)
    for n in range(len(bodies) - 1):
        nxt = len(compact(firsts[n + 1]))
        assert counts[n] == max_contacts or sizes[n] + 1 + nxt > cap, (
            f"body {n + 1} was closed at {counts[n]:,} contacts and {sizes[n]:,} bytes, "
            f"but the next contact ({nxt:,} bytes) fitted under the cap of {cap:,}"
        )
    return Checked(contacts, counts, sizes, list(list_ids))


def _same_contacts(got: Sequence[Contact], expected: Sequence[Mapping[str, Any]]) -> None:
    """Exactly the expected contacts in order; on a difference, say briefly what it is."""
    want_emails = {c["email"] for c in expected}
    got_emails = {c["email"] for c in got}
    lost = [c["email"] for c in expected if c["email"] not in got_emails]
    extra = [c["email"] for c in got if c["email"] not in want_emails]
    assert not lost, f"{len(lost)} contacts were not sent, e.g. {lost[:3]}"
    assert not extra, f"{len(extra)} contacts were sent that should not be, e.g. {extra[:3]}"
    assert len(got) == len(expected), f"{len(got):,} contacts sent, {len(expected):,} expected"
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if a != dict(b):
            pytest.fail(f"contact {i + 1} is {a!r}, expected {dict(b)!r}")


def chunk_files(out: Path) -> list[bytes]:
    """The bodies a prepare wrote to a local folder, in order; their names must run
    chunk-00001.json, chunk-00002.json ... with no gap (a missing body is lost data)."""
    paths = sorted((out / "chunks").iterdir())
    names = [p.name for p in paths]
    assert names == [f"chunk-{i:05d}.json" for i in range(1, len(paths) + 1)], names
    return [p.read_bytes() for p in paths]


def check_summary(summary: Mapping[str, Any], checked: Checked, cap: int) -> None:
    """The summary's figures are the bodies' own (the run and the reports go by them)."""
    assert summary["max_body_bytes"] == cap
    assert summary["chunks"] == len(checked.sizes)
    assert summary["largest_chunk_bytes"] == max(checked.sizes, default=0)
    assert summary["chunk_files"] == [
        {"name": f"chunks/chunk-{i:05d}.json", "contacts": k, "bytes": b}
        for i, (k, b) in enumerate(zip(checked.counts, checked.sizes, strict=True), 1)
    ]
    assert summary["fewest_chunks_possible"] == checked.fewest(cap)
