"""The sandbox's start-up configuration. Defaults are those of the real service.

The limits among them are the API's own (contract/constant-contact-v3.yaml states them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DAY = 86_400


@dataclass(frozen=True)
class SandboxConfig:
    """Everything a sandbox is started with; read once by the CLI (or a test) and passed in.

    Limits, pacing and faults are only the starting values: ``/__sandbox/settings``
    and ``/__sandbox/faults`` change them while the sandbox runs.
    """

    client_id: str = "ccexport-sandbox"
    client_secret: str = "ccexport-sandbox-secret"  # noqa: S105 - a local test credential
    rotating_refresh_tokens: bool = False
    access_token_ttl: float = DAY  # access tokens live 24 hours
    refresh_token_ttl: float = 180 * DAY  # unused refresh tokens expire after 180 days
    auth_code_ttl: float = 300.0  # authorization codes: single use, 5 minutes
    redirect_uris: tuple[str, ...] = ()  # empty: any redirect_uri is accepted
    requests_per_second: float = 4.0  # per API key
    daily_quota: int = 10_000  # per API key, resets 00:00 UTC
    token_requests_per_second: float = 1.0  # the token endpoint's own limit
    max_queued_activities: int = 1000  # past it, the bulk endpoints answer 429
    activity_delay: float = 0.05  # seconds an activity stays "initialized" at least
    items_per_second: float = 250_000.0  # how fast activities process contacts
    max_body_bytes: int = 64 * 1024 * 1024  # largest body read at all (4 MB rule applies within)
    seed: int | None = None  # for the fault dice
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
