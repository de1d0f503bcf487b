"""`ccexport prepare` as a user runs it: a real process, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from bench.sample import EXPORT, LIST_ID, RUN, TABLE, write_sample
from shared.errors import ConfigError
from shared.exports import definitions as exports
from tests.support.body_checks import DEFAULT_CAP, check_bodies, check_summary, chunk_files

ROOT = Path(__file__).resolve().parent.parent


def ccexport(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"AzureWebJobsStorage", "CCEXPORT_STORAGE_CONNECTION_STRING"}}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "shared.workstation.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**clean, **(env or {})},
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    counts = write_sample(root, 3000, parts=2, bad_every=100, duplicate_every=250)
    assert (counts.bad, counts.duplicates) == (30, 6)  # every 500th row is bad, not a duplicate
    return root


def test_prepare_with_config_prints_json_and_writes_output(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_dir = sample / EXPORT / TABLE / RUN
    result = ccexport("prepare", str(run_dir), "--config", str(sample / "export.json"),
                      "--out", str(out), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["rows_read"], summary["contacts"]) == (3000, 2964)
    assert (summary["rejected"], summary["duplicates"]) == (30, 6)
    assert summary == orjson.loads((out / "summary.json").read_bytes())
    checked = check_bodies(chunk_files(out), list_ids=[LIST_ID])  # every body, from its bytes
    assert len(checked.contacts) == 2964
    check_summary(summary, checked, DEFAULT_CAP)
    assert len((out / "rejects.csv").read_text().splitlines()) == 1 + 30 + 6


def test_a_list_name_is_taken_offline_and_noted_as_resolved_at_run_time(
    sample: Path, tmp_path: Path
) -> None:
    env = {"CTCT_API_BASE": "http://127.0.0.1:9/v3"}  # nothing listens: nothing is asked
    args = ["prepare", str(sample / EXPORT / TABLE), "--list-id", " Newsletter NL ",
            "--list-id", LIST_ID.upper(), "--map", "email=PrimaryEmail"]  # fmt: skip
    shown = ccexport(*args, "--out", str(tmp_path / "text"), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "  list        'Newsletter NL': a list name, resolved to its id at run time" in (
        shown.stdout.splitlines()
    )
    result = ccexport(*args, "--out", str(tmp_path / "o"), "--json", env=env)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["list_ids"] == ["Newsletter NL", LIST_ID]
    assert summary["list_names"] == {"Newsletter NL": "resolved to its id at run time"}
    body = orjson.loads(next((tmp_path / "o" / "chunks").iterdir()).read_bytes())
    assert body["list_ids"] == ["Newsletter NL", LIST_ID]


def test_prepare_with_flags_only(sample: Path, tmp_path: Path) -> None:
    result = ccexport("prepare", str(sample / EXPORT / TABLE), "--list-id", LIST_ID,
                      "--map", "email=PrimaryEmail", "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "contacts         2,964" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--list-id", "tab\tin-name", "--map", "email=PrimaryEmail"],
            "ccexport: error: list 'tab\\tin-name' is neither a list id (a UUID) nor a list name",
        ),
        (
            ["--list-id", LIST_ID, "--map", "email=Mail"],
            'ccexport: error: column "Mail" (mapped to email) is not in the file; its columns are: '
            "CustomerId, PrimaryEmail, FirstName",
        ),
        (
            ["--list-id", LIST_ID, "--map", "email=PrimaryEmail", "--max-profiles", "2999"],
            "ccexport: error: the export has more than 2,999 profiles",
        ),
        (["--map", "email=PrimaryEmail"], "ccexport: error: no list id"),
    ],
)
def test_unusable_input_is_one_line_on_stderr_and_writes_nothing(
    sample: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = ccexport("prepare", str(sample / EXPORT / TABLE), *args, "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not out.exists() or list(out.iterdir()) == []


def test_missing_source(tmp_path: Path) -> None:
    result = ccexport("prepare", str(tmp_path / "nope.csv"), "--list-id", LIST_ID,
                      "--map", "email=E", "--out", str(tmp_path / "o"))  # fmt: skip
    assert (result.returncode, result.stderr.strip()) == (
        2, f"ccexport: error: {tmp_path / 'nope.csv'} does not exist")  # fmt: skip


def test_blob_source_and_blob_output(sample: Path, azurite: str) -> None:
    service = BlobServiceClient.from_connection_string(azurite)
    inbox = service.get_container_client("inbox-cli")
    inbox.create_container()
    for path in sample.rglob("*"):
        if path.is_file():
            inbox.upload_blob(path.relative_to(sample).as_posix(), path.read_bytes())
    result = ccexport(
        "prepare", f"az://inbox-cli/{EXPORT}/{TABLE}", "--config", str(sample / "export.json"),
        "--out", "az://staging-cli/runs/1", "--json",
        env={"CCEXPORT_STORAGE_CONNECTION_STRING": azurite},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["source"] == f"az://inbox-cli/{EXPORT}/{TABLE}/{RUN} (2 parts)"
    assert summary["model"] == f"az://inbox-cli/{EXPORT}/model.json"
    staged = service.get_container_client("staging-cli")
    names = {b.name for b in staged.list_blobs()}
    assert {"runs/1/summary.json", "runs/1/rejects.csv"} <= names
    assert len([n for n in names if n.startswith("runs/1/chunks/")]) == summary["chunks"]
    for container in (inbox, staged):
        container.delete_container()


def test_blob_source_without_a_connection_is_a_clear_error(tmp_path: Path) -> None:
    result = ccexport("prepare", "az://inbox/x", "--list-id", LIST_ID, "--map", "email=E",
                      "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.returncode == 2
    assert "no storage connection is set" in result.stderr


def test_export_definition_validation(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    definition = {"list_ids": [LIST_ID], "mapping": {"email": "E"}, "modes": 1}
    path.write_bytes(orjson.dumps(definition))
    with pytest.raises(ConfigError, match="unknown field"):
        exports.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        exports.load(path)
    many = {"list_ids": [f"00000000-0000-4000-8000-{i:012d}" for i in range(51)],
            "mapping": {"email": "E"}}  # fmt: skip
    with pytest.raises(ConfigError, match="at most 50"):
        exports.from_json(many)
    same = {"list_ids": [LIST_ID, LIST_ID.upper()], "mapping": {"email": "E"}}
    assert exports.from_json(same).list_ids == (LIST_ID,)
