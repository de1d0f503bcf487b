"""`ccexport prepare` on local files loads neither the Azure SDKs nor aiohttp.

Together they are about 40 MB of a process that must fit in 256 MB; only Blob
Storage (an az:// source or output, a storage connection) needs them, and
tests/test_cli_prepare.py covers that path.
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
# Settings that would point prepare at Blob Storage (shared.storage, shared.settings).
STORAGE_SETTINGS = ("CCEXPORT_STORAGE", "CCEXPORT_STORAGE_CONNECTION_STRING", "AzureWebJobsStorage")

# The real command, in-process, then the heavy modules it loaded (last line of stdout).
PROGRAM = f"""
import sys
import orjson
from shared.cli import main
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
