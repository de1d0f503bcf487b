"""How the command line and ``ccexport serve`` write their log: readable lines, or,
with ``CCEXPORT_LOG_FORMAT=json``, one JSON object per line on stderr.

The JSON form lets the same records the app sends to Application Insights be read and
queried without Azure: each has ``time``, ``level``, ``logger`` and ``message``, and a
record written with structured fields (``extra={"ccexport": {...}}``, as the run's
outcome record ``run finished`` is: shared/runs/outcome.py) carries them beside.
An exception is named by its type only: its text could quote data.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from shared.runs.outcome import FIELDS

FORMAT_SETTING = "CCEXPORT_LOG_FORMAT"
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("azure", "aiohttp.access", "durabletask")
"""Libraries whose INFO lines say nothing an operator needs."""


class JsonLines(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            doc.update({str(k): v for k, v in fields.items() if k not in doc})
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
        return orjson.dumps(doc, default=str).decode()


def json_wanted(env: Mapping[str, str]) -> bool:
    return env.get(FORMAT_SETTING, "").strip().casefold() == "json"


def configure(env: Mapping[str, str], *, level: int = logging.INFO, always: bool = False) -> bool:
    """Log to stderr as the settings say. Without ``always`` (the command line), only
    the JSON form installs a handler: the commands print their own readable lines.
    Returns whether a handler was installed; a root that has one is left alone."""
    root = logging.getLogger()
    if root.handlers:
        return False
    wanted = json_wanted(env)
    if not wanted and not always:
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if wanted else logging.Formatter(PLAIN))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return True
