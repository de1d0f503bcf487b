"""Run ids, and how times are written in a run's inputs, statuses and reports.

A run id is at once the Durable instance id, a blob prefix and a folder name, so it
is held to what all three accept; starting a run again under the same id resumes it.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from shared.errors import ConfigError

_RUN_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def check_run_id(run_id: object) -> str:
    """A run id fit for an instance id, a blob prefix and a folder name."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ConfigError(
            f"run id {str(run_id)[:80]!r}: use 1-128 lower-case letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    return run_id


def iso(moment: datetime) -> str:
    """UTC, seconds, 'Z': how every time in inputs, statuses and reports is written."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(export_name: str | None, now: datetime) -> str:
    """A fresh run id for a run started by a person (CLI, HTTP): name, time, random tail."""
    stamp = now.strftime("%Y%m%dt%H%M%Sz")
    return check_run_id(f"{export_name or 'export'}-{stamp}-{secrets.token_hex(3)}")
