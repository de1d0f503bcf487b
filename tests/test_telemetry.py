"""A run's telemetry: one trace from its start to each Constant Contact request,
counters per API key and per run, and nothing in any of it that names a person.

The run goes through the command line with ``CCEXPORT_TELEMETRY_FILE`` (the SDK's own
exporters writing JSON lines), on the local Durable engine, against the sandbox over
HTTP; one request is answered 503 once, so a retry shows on its span. In Azure the
Functions host links trigger, orchestration and activities (Durable's distributed
tracing, host.json) and the worker's Azure Monitor exporter sends the same spans:
tests/test_infra.py checks those settings; nothing here can run the host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.sample import EXPORT, RUN, TABLE, write_sample
from shared.constant_contact.pacing import key_label
from shared.constant_contact.transport import refusal_kind
from shared.runs.outcome import RUN_FINISHED, fields_of
from shared.secrets.store import LocalFileSecretStore
from shared.telemetry.spans import API_KEY, RUN_ID, split_template
from shared.workstation.telemetry_file import SETTING
from tests.chaos.promises import store_tokens
from tests.support.ctct_support import run_cli
from tests.support.ingestion_fake import IngestionFake
from tests.support.sandbox_service import RunningSandbox, cli_env, running_sandbox
from tests.support.services import ROOT

ROWS = 600
BAD_EVERY = 100


def _values(data: Any) -> list[str]:
    """Every string anywhere in ``data`` (keys included)."""
    if isinstance(data, dict):
        return [s for k, v in data.items() for s in (str(k), *_values(v))]
    if isinstance(data, list):
        return [s for item in data for s in _values(item)]
    return [str(data)]


def _points(metrics: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    found = []
    for line in metrics:
        for resource in line["resource_metrics"]:
            for scope in resource["scope_metrics"]:
                for metric in scope["metrics"]:
                    if metric["name"] == name:
                        found += metric["data"]["data_points"]
    return found


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One CLI run of a small export with its telemetry written to a file."""
    root = tmp_path_factory.mktemp("traced")
    with running_sandbox(rate_limit=0, activity_delay=0) as sandbox:
        yield _run(root, sandbox)


def _run(root: Path, sandbox: RunningSandbox) -> dict[str, Any]:
    home = root / "home"
    write_sample(root / "sample", ROWS, parts=2, bad_every=BAD_EVERY, duplicate_every=0)
    list_id = sandbox.create_list()
    refresh = store_tokens(sandbox, LocalFileSecretStore(home))
    sandbox.faults(http_503={"rate": 1, "count": 1})  # the run's first /v3 request: once
    file = root / "telemetry.jsonl"
    env = cli_env(sandbox, home, CCEXPORT_LOG_FORMAT="json", **{SETTING: str(file)})
    args = ["run", str(root / "sample" / EXPORT / TABLE / RUN), "--list-id", list_id,
            "--map", "email=PrimaryEmail", "--map", "first_name=FirstName",
            "--poll-seconds", "0.2", "--max-body-bytes", "20000"]  # fmt: skip
    done = run_cli(args, env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    logs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    finished = [fields_of(r["message"]) for r in logs if r["message"].startswith(RUN_FINISHED)]
    assert len(finished) == 1
    assert finished[0] is not None
    seen = sandbox.control("GET", f"authorization?token={refresh}")["requests"]
    return {
        "at_sandbox": seen,
        "spans": [line for line in lines if "context" in line],
        "metrics": [line for line in lines if "resource_metrics" in line],
        "outcome": finished[0],
        "text": file.read_text(),
        "secrets": [refresh, sandbox.client_secret],
        "key": key_label(sandbox.client_id),
    }


def test_a_run_is_one_trace_from_its_start_to_each_request(traced_run: dict[str, Any]) -> None:
    spans = traced_run["spans"]
    run_id = traced_run["outcome"]["run_id"]
    steps = [s for s in spans if s["attributes"].get(RUN_ID) == run_id]
    assert {s["name"] for s in steps} >= {
        "ccexport prepare_segment", "ccexport upload_chunk", "ccexport poll_imports",
        "ccexport finish_run",
    }  # fmt: skip
    traces = {s["context"]["trace_id"] for s in steps}
    assert len(traces) == 1, "every step of the run is in one trace"
    (trace_id,) = traces
    in_trace = [s for s in spans if s["context"]["trace_id"] == trace_id]
    by_id = {s["context"]["span_id"]: s for s in in_trace}
    roots = [s for s in in_trace if s["parent_id"] is None]
    assert len(roots) == 1, [s["name"] for s in roots]
    requests = [s for s in in_trace if s["kind"] == "SpanKind.CLIENT" and s["name"].startswith(
        ("GET ", "POST ", "PUT ", "DELETE "))]  # fmt: skip
    assert requests
    for span in requests:
        step = by_id[span["parent_id"]]
        assert step["name"].startswith("ccexport "), "a request hangs under the step that sent it"
        method, template = split_template(span["name"])
        assert span["attributes"]["http.request.method"] == method
        assert span["attributes"]["url.template"] == template
        assert template.startswith("/")
        assert "?" not in span["attributes"]["url.full"]
        assert span["attributes"]["url.full"].endswith(
            "/v3" + template
        )  # the template, not the URL
        assert span["attributes"][API_KEY] == traced_run["key"]
        assert 200 <= span["attributes"]["http.response.status_code"] < 300
    imports = [s for s in requests if s["name"] == "POST /activities/contacts_json_import"]
    assert len(imports) == traced_run["outcome"]["requests"] - sum(
        1 for s in requests if s["name"].startswith("GET /activities")
    )
    retried = [s for s in requests if s["attributes"]["http.request.resend_count"] > 0]
    assert [s["attributes"]["http.request.resend_count"] for s in retried] == [1]
    assert all("error.type" not in s["attributes"] for s in requests)  # each one recovered


def test_counters_and_the_quota_per_api_key_and_per_run_match_the_run(
    traced_run: dict[str, Any],
) -> None:
    metrics, outcome, key = traced_run["metrics"], traced_run["outcome"], traced_run["key"]
    sent = _points(metrics, "ccexport.cc.requests")
    by_class = Counter[str]()
    for point in sent:
        assert point["attributes"][API_KEY] == key
        by_class[point["attributes"]["http.response.status_class"]] += point["value"]
    at_sandbox = Counter[str]()
    for codes in traced_run["at_sandbox"].values():
        for code, times in codes.items():
            at_sandbox[f"{code[0]}xx"] += times
    assert by_class["5xx"] == 1  # the one 503, counted: it was one of the key's requests
    assert by_class == at_sandbox, "every request the sandbox saw from the run, and no other"
    # The day's quota, read from the key's shared pacing record: every attempt counted.
    (used,) = (p["value"] for p in _points(metrics, "ccexport.cc.quota_used")[-1:])
    (left,) = (p["value"] for p in _points(metrics, "ccexport.cc.quota_left")[-1:])
    assert used == sum(by_class.values())
    assert left == 10_000 - used
    contacts = {
        p["attributes"]["ccexport.fate"]: p["value"]
        for p in _points(metrics, "ccexport.run.contacts")
        if p["attributes"][RUN_ID] == outcome["run_id"]
    }
    assert contacts["read"] == ROWS == outcome["rows_read"]
    assert contacts["delivered"] == outcome["delivered"] > 0
    assert contacts["rejected"] == outcome["rejected"] == ROWS // BAD_EVERY
    runs = [
        p for p in _points(metrics, "ccexport.runs") if p["attributes"][RUN_ID] == outcome["run_id"]
    ]
    assert [(p["value"], p["attributes"]["ccexport.outcome"]) for p in runs] == [
        (1, outcome["outcome"])
    ]


def test_nothing_recorded_names_a_person_or_holds_a_secret(traced_run: dict[str, Any]) -> None:
    text = traced_run["text"]
    assert "@" not in text
    for secret in traced_run["secrets"]:
        assert secret not in text
    strings = _values([*traced_run["spans"], *traced_run["metrics"]])
    assert not [s for s in strings if "@" in s or "Bearer" in s]


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, b'[{"error_key": "throttled", "error_message": "slow down"}]', "throttled"),
        (429, b'{"error_key": "quota_exceeded", "error_message": "Limit"}', "quota_exceeded"),
        (429, b'{"error_key": "ana@example.com"}', "http_429"),  # never the API's own words
        (503, b"", "http_503"),
        (400, b'[{"error_key": "json.field.invalid"}]', "http_400"),
    ],
)
def test_a_refusal_is_named_by_its_kind_only(status: int, body: bytes, kind: str) -> None:
    assert refusal_kind(status, body) == kind


def _deployed_setting(name: str) -> str:
    """An app setting's value as infra/app/functionapp.bicep writes it (a literal)."""
    text = (ROOT / "infra" / "app" / "functionapp.bicep").read_text()
    found = re.search(rf"name: '{name}'\s*\n\s*value: '([^']*)'", text)
    assert found is not None, name
    return found.group(1)


def test_the_worker_s_exporter_sends_the_spans_metrics_and_record_and_reaches_nothing_else(
    tmp_path: Path,
) -> None:
    """The Azure Monitor distro, configured as the Functions worker configures it and
    with the deployment's settings, pointed at a local ingestion endpoint: what the app
    records arrives as Application Insights telemetry (a dependency per request, the
    outcome record as a trace message whose text the alert rules parse, the counters),
    and no connection goes anywhere but 127.0.0.1 (the metadata address, statsbeat)."""
    out = tmp_path / "probe.json"
    with IngestionFake() as ingestion:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATION"))},
            "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string,
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",  # a Microsoft address
            "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": _deployed_setting(
                "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
            ),
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": _deployed_setting(
                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
            ),
            "OTEL_TRACES_SAMPLER": _deployed_setting("OTEL_TRACES_SAMPLER"),
            # The exporter keeps what it could not send in the temporary folder, by
            # instrumentation key: this test's own, or a later run would send it again.
            "TMPDIR": str(tmp_path),
        }
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.distro_probe", str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        envelopes = list(ingestion.envelopes)
        bodies = b"".join(ingestion.bodies)
    assert json.loads(out.read_text()) == {"refused": []}
    kinds: dict[str, list[dict[str, Any]]] = {}
    for envelope in envelopes:
        kinds.setdefault(envelope["data"]["baseType"], []).append(envelope["data"]["baseData"])
    dependencies = {d["name"]: d for d in kinds["RemoteDependencyData"]}
    request = dependencies["POST /v3/activities/contacts_json_import"]
    assert request["resultCode"] == "201"
    assert request["data"] == "http://127.0.0.1:9/v3/activities/contacts_json_import"
    assert request["properties"]["ccexport.api_key"] == "0badc0de"
    assert "ccexport upload_chunk" in dependencies
    messages = [m["message"] for m in kinds["MessageData"]]
    finished = [fields_of(m) for m in messages if m.startswith(RUN_FINISHED)]
    assert [f["run_id"] for f in finished if f] == ["probe-20261205t000000z-abc123"]
    metric_names = {m["name"] for d in kinds["MetricData"] for m in d["metrics"]}
    assert {"ccexport.cc.requests", "ccexport.run.contacts", "ccexport.runs"} <= metric_names
    assert b"@" not in bodies
