"""Configure the Azure Monitor distro as the Functions Python worker does, run the
app's telemetry code once, flush, and write what tried to leave 127.0.0.1.

``python -m tests.support.distro_probe OUT``, with the app settings of the deployment
and a connection string naming tests/support/ingestion_fake.py in its environment.
Every socket connection to another address is refused and recorded (the distro must
not probe the Azure metadata address or send statsbeat anywhere in a test), and OUT
gets them as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any

BASE = "http://127.0.0.1:9/v3"
"""The API base the probe's request span names (nothing is sent to it)."""
REFUSED: list[str] = []
_LOCAL = {"127.0.0.1", "::1", "localhost"}
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _allowed(address: Any) -> bool:
    return not isinstance(address, tuple) or str(address[0]) in _LOCAL


def _guarded_connect(self: Any, address: Any) -> None:
    if not _allowed(address):
        REFUSED.append(str(address[0]))
        raise OSError(101, "refused by the test: not 127.0.0.1")
    _connect(self, address)


def _guarded_connect_ex(self: Any, address: Any) -> int:
    if not _allowed(address):
        REFUSED.append(str(address[0]))
        return 101
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


def main(out: str) -> None:
    # What the worker does (azure-functions-python-worker's initialize_azure_monitor):
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_functions")
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415
    from opentelemetry import _logs, metrics, trace  # noqa: PLC0415

    configure_azure_monitor(
        connection_string=os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"], logger_name=""
    )

    from shared.runs.outcome import log_run_finished  # noqa: PLC0415 - after the providers
    from shared.telemetry import meters  # noqa: PLC0415
    from shared.telemetry.spans import request_span, step_span  # noqa: PLC0415

    log = logging.getLogger("shared.runs.activities")
    log.setLevel(logging.INFO)
    with step_span("upload_chunk", "probe-20261205t000000z-abc123", export="probe"):
        with request_span(
            "POST /activities/contacts_json_import", base=BASE, api_key="0badc0de"
        ) as call:
            call.status = 201
        meters.count_request("0badc0de", "POST /activities/contacts_json_import", 201)
    report = {
        "run_id": "probe-20261205t000000z-abc123", "status": "completed", "export": "probe",
        "connection": "default", "trigger": "blob", "started_at": "2026-12-05T00:00:00Z",
        "finished_at": "2026-12-05T00:01:00Z", "error": None,
        "counts": {"rows_read": 10, "contacts": 10, "contacts_delivered": 10},
        "changes": {}, "requests": {"import_requests": 1, "poll_requests": 1},
    }  # fmt: skip
    meters.record_run(log_run_finished(log, report))
    # The SDK's providers, which the distro installed, flush; the API's types say less.
    providers: list[Any] = [
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
        _logs.get_logger_provider(),
    ]
    for provider in providers:
        provider.force_flush()
    with open(out, "w", encoding="utf-8") as file:
        json.dump({"refused": REFUSED}, file)


if __name__ == "__main__":
    main(sys.argv[1])
