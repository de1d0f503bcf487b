"""`ccexport prepare` on local files loads neither the Azure SDKs nor aiohttp.

Together they are about 40 MB of a process that must fit in 256 MB; only Blob
Storage (an az:// source or output, a storage connection) needs them, and
tests/test_cli_prepare.py covers that path.

`ccexport run`, `connect` and `check` with secrets in local files load neither
azure-identity (nor its msal and requests), azure-keyvault-secrets nor
azure-storage-blob: about 0.2 to 0.4 s of a second, unchanged run that must take a
tenth of the first. Only a Key Vault store (shared.secrets.keyvault), a managed-identity
credential or Blob Storage needs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from bench.sample import EXPORT, RUN, TABLE, write_sample

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("azure.storage.blob", "azure.identity", "azure.keyvault.secrets", "aiohttp")
# Settings that would point prepare at Blob Storage (shared.storage.blobs, shared.config).
STORAGE_SETTINGS = ("CCEXPORT_STORAGE", "CCEXPORT_STORAGE_CONNECTION_STRING", "AzureWebJobsStorage")

# The real command, in-process, then the heavy modules it loaded (last line of stdout).
PROGRAM = f"""
import sys
import orjson
from shared.workstation.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))
print(orjson.dumps({{"code": code, "loaded": loaded}}).decode())
"""


def test_local_prepare_loads_no_azure_sdk_or_aiohttp(tmp_path: Path) -> None:
    sample = tmp_path / "sample"
    counts = write_sample(sample, 500, parts=2, bad_every=50, duplicate_every=100)
    env = {k: v for k, v in os.environ.items() if not k.startswith(STORAGE_SETTINGS)}
    env |= {"CCEXPORT_HOME": str(tmp_path / "home"), "CCEXPORT_DEBUG": "1"}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, "prepare", str(sample / EXPORT / TABLE / RUN),
         "--config", str(sample / "export.json"), "--out", str(out), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    *summary_lines, last = result.stdout.splitlines()
    report = orjson.loads(last)
    assert report["code"] == 0, result.stderr
    summary = orjson.loads("\n".join(summary_lines))
    assert summary["contacts"] == counts.contacts  # it really prepared the segment
    assert (out / "summary.json").is_file()
    assert report["loaded"] == []


NOT_NEEDED_LOCALLY = ("azure.identity", "azure.keyvault", "msal", "azure.storage.blob")

# What `ccexport run` and `connect`/`check` import (shared/workstation/cli.py, then what
# shared/workstation/local_run.py imports when a run starts), a secret written to and read from
# local files, then a store for a vault: the Key Vault SDKs loaded after each step.
SECRETS_PROGRAM = f"""
import asyncio, importlib, os, sys
import orjson
from shared.secrets.opening import open_secret_store

def loaded():
    return sorted({{m for m in sys.modules if m.startswith({NOT_NEEDED_LOCALLY!r})}})

async def round_trip(store):
    async with store:
        await store.set("probe", "value")
        assert await store.get("probe") == "value"

steps = {{}}
for name in sys.argv[1:]:
    importlib.import_module(name)
    steps[name] = loaded()
asyncio.run(round_trip(open_secret_store({{"CCEXPORT_HOME": os.environ["CCEXPORT_HOME"]}})))
steps["local store"] = loaded()
vault = open_secret_store({{"KEY_VAULT_URL": "https://ccexport-test.vault.azure.net/"}})
asyncio.run(vault.close())
steps["vault store"] = loaded()
print(orjson.dumps(steps).decode())
"""

RUN_PATH = (
    "shared.workstation.cli",
    "shared.workstation.run_command",
    "functions.activities",
    "functions.orchestrator",
    "shared.workstation.local_engine",
    "shared.workstation.connection_commands",
)


def test_local_run_and_connect_load_no_key_vault_identity_or_blob_sdk(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KEY_VAULT_URL"}
    env["CCEXPORT_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-c", SECRETS_PROGRAM, *RUN_PATH],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    steps = orjson.loads(result.stdout.splitlines()[-1])
    for step in (*RUN_PATH, "local store"):
        assert steps[step] == [], step
    # The probe does see them once a vault is really asked for.
    for sdk in ("azure.identity", "azure.keyvault.secrets", "msal"):
        assert sdk in steps["vault store"]
