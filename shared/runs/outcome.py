"""The one record a run leaves in the log when it ends: ``run finished``.

One structured record per run, whatever started it, written by ``finish_run`` once
the report is stored: the run's ids, what started it, its outcome, its counts and its
duration. Queries and alert rules read it (Application Insights in Azure; the
``CCEXPORT_LOG_FORMAT=json`` lines of the command line and ``serve``), so its fields
are a contract: they come from the report, and hold no email address, token or data
value (the report holds none: shared/runs/report.py).

The fields travel twice: as the record's attribute ``ccexport`` (the JSON lines write
them beside the message) and inside the message itself, ``run finished {...}`` (one
JSON object after the words). The message is what reaches Application Insights: the
Functions Python worker sends a record's formatted message, not its ``extra``
attributes, so the alert rules (shared/runs/alerts.py) parse the JSON after the words.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

RUN_FINISHED = "run finished"
"""The words the record's message starts with; its fields follow, as one JSON object."""
FIELDS = "ccexport"
"""The attribute of the log record that holds its fields (``extra={FIELDS: {...}}``);
the JSON log format and the Azure exporter write them beside the message."""


def _seconds(started: str, finished: str) -> float | None:
    try:
        begun = datetime.fromisoformat(started.replace("Z", "+00:00"))
        ended = datetime.fromisoformat(finished.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return round((ended - begun).total_seconds(), 3)


def run_finished(report: Mapping[str, Any]) -> dict[str, Any]:
    """The record's fields, from the run's report."""
    counts = report.get("counts") or {}
    changes = report.get("changes") or {}
    requests = report.get("requests") or {}
    return {
        "event": "run_finished",
        "run_id": report.get("run_id"),
        "export": report.get("export"),
        "connection": report.get("connection"),
        "trigger": report.get("trigger"),
        "outcome": report.get("status"),
        "duration_seconds": _seconds(str(report.get("started_at")), str(report.get("finished_at"))),
        "rows_read": counts.get("rows_read", 0),
        "contacts": counts.get("contacts", 0),
        "delivered": counts.get("contacts_delivered", 0),
        "not_delivered": counts.get("contacts_not_delivered", 0),
        "unconfirmed": counts.get("contacts_unconfirmed", 0),
        "unchanged": counts.get("contacts_unchanged", 0),
        "rejected": counts.get("rejected", 0),
        "duplicates": counts.get("duplicates", 0),
        "removed": changes.get("removed", 0) or 0,
        "requests": requests.get("import_requests", 0) + requests.get("poll_requests", 0),
        "error": report.get("error"),
    }


def log_run_finished(log: logging.Logger, report: Mapping[str, Any]) -> dict[str, Any]:
    """Write the record; returns its fields. At INFO whatever the outcome: queries and
    alerts select on its fields, and a command line with no log configured must not
    print it on stderr (Python's last-resort handler prints WARNING and above)."""
    fields = run_finished(report)
    log.info("%s %s", RUN_FINISHED, _json(fields), extra={FIELDS: fields})
    return fields


def _json(fields: Mapping[str, Any]) -> str:
    return orjson.dumps(fields, default=str).decode()


def fields_of(message: str) -> dict[str, Any] | None:
    """The fields of a ``run finished`` message, as a query over the log reads them;
    None for any other message."""
    head = f"{RUN_FINISHED} {{"
    if not message.startswith(head):
        return None
    try:
        fields = orjson.loads(message[len(RUN_FINISHED) + 1 :])
    except orjson.JSONDecodeError:
        return None
    return fields if isinstance(fields, dict) else None
