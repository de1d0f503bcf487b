"""A small index of started runs, so "recent runs of an export" is one listing.

One document per start, ``runs/<export>/<inverted time>-<key digest>.json``: the
inverted time makes a plain (ascending) listing newest first. It records what was
started (run id, source folder, connection, trigger, time), never contact data; the
run's status and report come from the engine and the run store.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.storage.documents import DocumentExists, Documents

RUNS = "runs/"
_INVERT = 9_999_999_999


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    export: str
    source: str
    connection: str | None
    trigger: str
    requested_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "export": self.export,
            "source": self.source,
            "connection": self.connection,
            "trigger": self.trigger,
            "requested_at": self.requested_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> RunRecord | None:
        if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
            return None
        return cls(
            run_id=data["run_id"],
            export=str(data.get("export", "")),
            source=str(data.get("source", "")),
            connection=data.get("connection"),
            trigger=str(data.get("trigger", "")),
            requested_at=str(data.get("requested_at", "")),
        )


def _entry_name(record: RunRecord) -> str:
    when = datetime.fromisoformat(record.requested_at.replace("Z", "+00:00"))
    digest = record.run_id.rpartition(".")[2][:16] or "run"
    return f"{RUNS}{record.export}/{_INVERT - int(when.timestamp()):010d}-{digest}.json"


class RunIndex:
    def __init__(self, documents: Documents) -> None:
        self.documents = documents

    async def record(self, record: RunRecord) -> None:
        # The same run recorded twice in one second: once is enough.
        with contextlib.suppress(DocumentExists):
            await self.documents.create(_entry_name(record), record.to_json())

    async def recent(self, export: str, limit: int = 20) -> list[RunRecord]:
        """The export's latest starts, newest first, one per run id."""
        found: list[RunRecord] = []
        seen: set[str] = set()
        for name in await self.documents.names(f"{RUNS}{export}/"):
            doc = await self.documents.get(name)
            record = RunRecord.from_json(doc.data) if doc else None
            if record is None or record.run_id in seen:
                continue
            seen.add(record.run_id)
            found.append(record)
            if len(found) >= limit:
                break
        return found
