"""The addresses bench/sample.py's segment must leave on a list (tests/test_export_run.py,
and the list-by-name runs of tests/test_lists_and_fields_cli.py)."""

from __future__ import annotations

import csv
from pathlib import Path

from bench.sample import EXPORT, RUN, TABLE


def expected_emails(sample: Path) -> list[str]:
    """The addresses the list must hold, read from the sample's CSV without ccexport's
    own rules: trimmed and lower-cased, the first row of each address kept. The sample's
    only broken addresses (bench/sample.py writes ``not-an-email-N``) have no "@"; every
    other one is ``user.N@exampleM.com``, so "something@something.tld" tells them apart."""
    found: dict[str, None] = {}
    for part in sorted((sample / EXPORT / TABLE / RUN).glob("*.csv")):
        with part.open(encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh):
                email = row[1].strip().lower()
                local, at, domain = email.partition("@")
                if at and local and "." in domain.strip("."):
                    found.setdefault(email)
    return list(found)
