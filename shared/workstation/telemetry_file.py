"""``CCEXPORT_TELEMETRY_FILE``: the app's spans and metrics, written to a file on a
workstation, one JSON object a line.

In Azure the Functions worker installs the exporter to Application Insights; here
nothing would, and the spans and counters of shared/telemetry would go nowhere. With
the setting, the command line and ``serve`` install OpenTelemetry's own SDK
providers with its console exporters pointed at the file: a run's whole trace
(durabletask's orchestration and activity spans, ccexport's steps and every
Constant Contact request) and its metrics, readable without Azure. The same rule
holds as in Azure: nothing in it names a person (the tests read the file for it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

SETTING = "CCEXPORT_TELEMETRY_FILE"
SERVICE = "ccexport"


def install(env: Mapping[str, str] = os.environ) -> Callable[[], None] | None:
    """Install file-writing providers when ``env`` names a file; returns what flushes
    and closes them (call it before the process ends), or None when not asked."""
    target = env.get(SETTING, "").strip()
    if not target:
        return None
    path = Path(target).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8")
    resource = Resource.create({"service.name": SERVICE})
    spans = TracerProvider(resource=resource)
    spans.add_span_processor(
        BatchSpanProcessor(
            ConsoleSpanExporter(out=stream, formatter=lambda span: span.to_json(indent=None) + "\n")
        )
    )
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(out=stream, formatter=lambda data: data.to_json(indent=None) + "\n"),
        export_interval_millis=60_000,
    )
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    trace.set_tracer_provider(spans)
    metrics.set_meter_provider(meters)

    def close() -> None:
        spans.shutdown()  # exports what is batched
        meters.shutdown()  # collects and exports the counters once more
        stream.close()

    return close
