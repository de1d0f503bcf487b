"""Metrics: what ccexport asked of Constant Contact per API key, and what each run
did with its contacts.

Per API key (``ccexport.api_key``, a label of the key, shared/constant_contact/pacing.py):
requests by template and status class, throttled answers, and the times the daily
quota ran out. Per run (``ccexport.run_id``, with its export, trigger and outcome):
contacts by what became of them (``read``, ``delivered``, ``not_delivered``,
``rejected``, ``unchanged``, ``removed``), the run itself and its duration. A run id
is a dimension because a run is what an operator asks about; runs are few (one an
export a day, mostly), so the series stay few.

The day's quota per key (``ccexport.cc.quota_used``, ``ccexport.cc.quota_left``) is
observed, not counted here: Constant Contact does not say it (no rate-limit headers),
and one process's count would be wrong as soon as two share a key, so each reading
asks the key's shared pacing record, which every process updates
(shared/constant_contact/pacing.py), through the reader :func:`watch_quota` was given.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from shared.telemetry.spans import API_KEY, EXPORT, RUN_ID, SCOPE

log = logging.getLogger(__name__)

_meter = metrics.get_meter(SCOPE)
# Made once, on the API's proxy meter: they start recording when a provider is
# installed (the Functions worker installs one after importing the app).
REQUESTS = _meter.create_counter(
    "ccexport.cc.requests", unit="{request}", description="Requests sent to Constant Contact"
)
THROTTLED = _meter.create_counter(
    "ccexport.cc.throttled",
    unit="{response}",
    description="429 throttled answers from Constant Contact (the per-second limit)",
)
QUOTA_EXHAUSTED = _meter.create_counter(
    "ccexport.cc.quota_exhausted",
    unit="{response}",
    description="429 quota_exceeded answers: the API key's daily quota ran out",
)
CONTACTS = _meter.create_counter(
    "ccexport.run.contacts",
    unit="{contact}",
    description="A run's contacts, by what became of them",
)
RUNS = _meter.create_counter("ccexport.runs", unit="{run}", description="Runs that ended")
DURATION = _meter.create_histogram(
    "ccexport.run.duration", unit="s", description="From a run's start to its report"
)

CONTACT_FATES = {
    "read": "rows_read",
    "delivered": "delivered",
    "not_delivered": "not_delivered",
    "rejected": "rejected",
    "unchanged": "unchanged",
    "removed": "removed",
}
"""Metric ``fate`` -> the outcome record's field it counts (shared/runs/outcome.py)."""


def count_request(api_key: str, template: str, status: int | None) -> None:
    """One request sent (each attempt counts: each is one of the key's 10,000)."""
    status_class = f"{status // 100}xx" if status else "none"
    REQUESTS.add(
        1, {API_KEY: api_key, "url.template": template, "http.response.status_class": status_class}
    )


def count_throttled(api_key: str) -> None:
    THROTTLED.add(1, {API_KEY: api_key})


def count_quota_exhausted(api_key: str) -> None:
    QUOTA_EXHAUSTED.add(1, {API_KEY: api_key})


def record_run(fields: Mapping[str, Any]) -> None:
    """A run's numbers, from its outcome record's fields (no personal data there)."""
    names = {
        RUN_ID: str(fields.get("run_id") or ""),
        EXPORT: str(fields.get("export") or ""),
        "ccexport.trigger": str(fields.get("trigger") or ""),
        "ccexport.outcome": str(fields.get("outcome") or ""),
    }
    for fate, field in CONTACT_FATES.items():
        value = fields.get(field) or 0
        if isinstance(value, int) and value > 0:
            CONTACTS.add(value, {**names, "ccexport.fate": fate})
    RUNS.add(1, names)
    duration = fields.get("duration_seconds")
    if isinstance(duration, int | float) and duration >= 0:
        DURATION.record(float(duration), names)


QuotaReader = Callable[[], tuple[int, int]]
"""Returns the API key's requests so far today (UTC) and its daily limit."""

_QUOTAS: dict[str, QuotaReader] = {}
_QUOTAS_LOCK = threading.Lock()


def watch_quota(api_key: str, read: QuotaReader) -> None:
    """Report the day's quota of the key labelled ``api_key`` with ``read`` (the last
    reader given for a key wins). It runs on the metrics exporter's thread, once an
    export interval, and may block briefly (a blob read)."""
    with _QUOTAS_LOCK:
        _QUOTAS[api_key] = read


def _readings() -> list[tuple[str, int, int]]:
    with _QUOTAS_LOCK:
        readers = list(_QUOTAS.items())
    found = []
    for key, read in readers:
        try:
            used, limit = read()
        except Exception as exc:  # a reading missed is a gap in a chart, not an error
            log.info("the quota of key %s could not be read (%s)", key, type(exc).__name__)
            continue
        found.append((key, used, limit))
    return found


def _used(options: CallbackOptions) -> Iterable[Observation]:
    del options
    return [Observation(used, {API_KEY: key}) for key, used, _ in _readings()]


def _left(options: CallbackOptions) -> Iterable[Observation]:
    del options
    return [Observation(max(limit - used, 0), {API_KEY: key}) for key, used, limit in _readings()]


_meter.create_observable_gauge(
    "ccexport.cc.quota_used",
    callbacks=[_used],
    unit="{request}",
    description="The API key's requests so far today (UTC), every process counted",
)
_meter.create_observable_gauge(
    "ccexport.cc.quota_left",
    callbacks=[_left],
    unit="{request}",
    description="The API key's requests left today (UTC) of its daily quota",
)
