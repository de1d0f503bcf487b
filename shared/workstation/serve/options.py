"""What the command line decided, handed to the running server; limits both use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INBOX_INTERVAL = 1.0
MAX_BODY = 8 * 1024 * 1024
LOOPBACK = "127.0.0.1"
LOCAL_TENANT = "c0ffee00-5e7e-4ca1-8000-000000000001"
"""The Entra tenant serve plays: it sets CCEXPORT_TENANT_ID to it, and its principal
names it, as the deployment's setting and a signed-in user of its tenant would."""


@dataclass(frozen=True)
class ServeOptions:
    port: int
    user: str
    roles: tuple[str, ...]
    timer: bool
    grace: float
    inbox: Path | None
    """The inbox folder; None when the inbox is the storage connection's container."""
