"""The figures the chaos suite ends with: what it did to the run and what the run lost.

Tests add to one :data:`FIGURES` as they go; tests/conftest.py prints them at the end
of the session (``make chaos`` ends with them). Under pytest-xdist each worker process
fills its own and hands it to the controller, which adds them up (``to_json``/``merge``).
``contacts_lost`` is the sum, over every fault run, of valid contacts missing from (or
extra in) the list at the end; the tests assert it is 0 run by run, the figure shows
the suite looked.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figures:
    faults: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    contacts_expected: int = 0
    contacts_lost: int = 0
    chunks: int = 0
    chunks_sent_twice: int = 0
    most_sends_of_one_chunk: int = 0
    bad_inputs: list[str] = field(default_factory=list)
    trigger_deliveries: int = 0
    trigger_runs_started: int = 0
    security_checks: list[str] = field(default_factory=list)
    covered_elsewhere: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fault(self, name: str, count: int = 1) -> None:
        if count > 0:
            with self._lock:
                self.faults[name] += count

    def run(self, count: int = 1) -> None:
        with self._lock:
            self.runs += count

    def delivery(self, expected: int, lost: int, chunks: int, twice: int, most: int) -> None:
        with self._lock:
            self.contacts_expected += expected
            self.contacts_lost += lost
            self.chunks += chunks
            self.chunks_sent_twice += twice
            self.most_sends_of_one_chunk = max(self.most_sends_of_one_chunk, most)

    def bad_input(self, name: str) -> None:
        with self._lock:
            self.bad_inputs.append(name)

    def security(self, name: str) -> None:
        with self._lock:
            self.security_checks.append(name)

    def to_json(self) -> dict[str, Any]:
        """What a pytest-xdist worker hands the controller (plain JSON types)."""
        with self._lock:
            return {
                "faults": dict(self.faults),
                "counts": {name: getattr(self, name) for name in _COUNTS},
                "most_sends_of_one_chunk": self.most_sends_of_one_chunk,
                "bad_inputs": list(self.bad_inputs),
                "security_checks": list(self.security_checks),
                "covered_elsewhere": list(self.covered_elsewhere),
            }

    def merge(self, other: dict[str, Any]) -> None:
        """Add a worker's figures (``to_json``) to these, in the controller."""
        with self._lock:
            self.faults.update(other["faults"])
            for name, value in other["counts"].items():
                setattr(self, name, getattr(self, name) + value)
            self.most_sends_of_one_chunk = max(
                self.most_sends_of_one_chunk, other["most_sends_of_one_chunk"]
            )
            self.bad_inputs += other["bad_inputs"]
            self.security_checks += other["security_checks"]
            # The list of checks made in other test files, the same wherever it was read.
            self.covered_elsewhere = other["covered_elsewhere"] or self.covered_elsewhere

    def empty(self) -> bool:
        return not (self.runs or self.bad_inputs or self.security_checks or self.faults)

    def lines(self, scale: str) -> list[str]:
        faults = ", ".join(f"{name} {n:,}" for name, n in sorted(self.faults.items()))
        inputs = {entry.partition(":")[2] for entry in self.bad_inputs}
        ways = Counter(entry.partition(":")[0] for entry in self.bad_inputs)
        return [
            f"scale                 {scale}",
            f"faults injected       {sum(self.faults.values()):,}  ({faults or 'none'})",
            f"runs                  {self.runs:,}",
            f"contacts expected     {self.contacts_expected:,}",
            f"contacts lost         {self.contacts_lost:,}",
            f"chunks                {self.chunks:,}",
            f"chunks sent twice     {self.chunks_sent_twice:,}  "
            f"(most sends of one chunk: {self.most_sends_of_one_chunk})",
            f"bad inputs tried      {len(inputs):,}"
            + (
                f"  ({len(self.bad_inputs):,} tries: "
                + ", ".join(f"{n} through {way}" for way, n in sorted(ways.items()))
                + ")"
                if self.bad_inputs
                else ""
            ),
            f"duplicate triggers    {self.trigger_deliveries:,} deliveries, "
            f"{self.trigger_runs_started:,} run(s) started",
            f"security checks       {len(self.security_checks):,} here, "
            f"{len(self.covered_elsewhere):,} in other test files",
        ]


_COUNTS = (
    "runs",
    "contacts_expected",
    "contacts_lost",
    "chunks",
    "chunks_sent_twice",
    "trigger_deliveries",
    "trigger_runs_started",
)

FIGURES = Figures()
