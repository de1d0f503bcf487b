"""What ccexport tells Application Insights about itself: spans and metrics.

The app's code uses only the OpenTelemetry API; whoever runs it decides where the
data goes. In Azure the Functions Python worker configures the Azure Monitor
distro (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY``, infra/app/functionapp.bicep)
and the Functions host's Durable distributed tracing links the trigger, the
orchestration and each activity into one trace, under which the spans made here
hang; on a workstation ``CCEXPORT_TELEMETRY_FILE`` writes them to a file
(shared/workstation/telemetry_file.py); with neither, the API's no-op providers make
every call here nearly free.

- ``spans.py``: a span per Constant Contact request and per run step, with the
  attributes a query needs and nothing that names a person.
- ``meters.py``: the counters of requests, throttled answers and contacts, per API
  key and per run.

Everything recorded passes one rule: no email address, token or data value, ever;
only names the app or an admin chose (exports, connections, run ids, URL templates),
counts, statuses and durations.
"""
