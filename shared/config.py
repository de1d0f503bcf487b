"""The Constant Contact and secret-store settings, read once at the edge.

The names are the app settings of the function app, so the command line and Azure
read the same variables:

| setting            | default                                              |
|--------------------|------------------------------------------------------|
| CTCT_CLIENT_ID     | (required to talk to Constant Contact)               |
| CTCT_CLIENT_SECRET | the secret ``ctct-client-secret`` in the vault, when  |
|                    | KEY_VAULT_URL is set; else none (public PKCE client) |
| CTCT_API_BASE      | https://api.cc.email/v3                              |
| CTCT_AUTH_BASE     | https://authz.constantcontact.com/oauth2/default/v1  |
| CTCT_REQUESTS_PER_SECOND | 4 (the per-API-key limit; lower it to share)   |
| CTCT_DAILY_QUOTA   | 10000 (the API key's requests a day)                 |
| CTCT_REDIRECT_URI  | the app's own ``/api/oauth/callback`` address         |
| KEY_VAULT_URL      | unset: secrets live in files under CCEXPORT_HOME     |
| CCEXPORT_HOME      | ~/.ccexport                                          |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import ConfigError

if TYPE_CHECKING:
    # Only for types: shared.secrets.store imports this module (for ccexport_home).
    from shared.secrets.store import SecretStore

DEFAULT_API_BASE = "https://api.cc.email/v3"
DEFAULT_AUTH_BASE = "https://authz.constantcontact.com/oauth2/default/v1"
CLIENT_SECRET_NAME = "ctct-client-secret"  # noqa: S105 - the secret's name, not a secret
# Settings the secret store and its credential read (see shared.secrets.store).
_STORE_KEYS = ("KEY_VAULT_URL", "CCEXPORT_HOME", "AZURE_CLIENT_ID")


def ccexport_home(settings: Mapping[str, str]) -> Path:
    """Local state and secrets for the command line: CCEXPORT_HOME or ~/.ccexport."""
    configured = settings.get("CCEXPORT_HOME", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".ccexport"


@dataclass(frozen=True)
class Settings:
    """Everything the Constant Contact side needs, parsed from one mapping."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    api_base: str = DEFAULT_API_BASE
    auth_base: str = DEFAULT_AUTH_BASE
    requests_per_second: float = 4.0
    daily_quota: int = 10_000
    """CTCT_DAILY_QUOTA: the API key's requests a day, as Constant Contact grants them."""
    key_vault_url: str | None = None
    home: Path = field(default_factory=lambda: Path.home() / ".ccexport")
    store_settings: Mapping[str, str] = field(default_factory=dict, repr=False)
    redirect_uri: str | None = None
    """CTCT_REDIRECT_URI: where Constant Contact sends the browser back, when it is not
    the app's own callback address (a proxy or custom domain in front of the app)."""

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Parse settings (os.environ or app settings); bad values are a ConfigError."""

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        rate_text = text("CTCT_REQUESTS_PER_SECOND") or "4"
        try:
            rate = float(rate_text)
        except ValueError:
            rate = 0.0
        if not 0 < rate <= 4:
            raise ConfigError(
                f"CTCT_REQUESTS_PER_SECOND must be a number in (0, 4], not {rate_text!r}"
            )
        quota_text = text("CTCT_DAILY_QUOTA") or "10000"
        if not quota_text.isdigit() or int(quota_text) < 1:
            raise ConfigError(
                "CTCT_DAILY_QUOTA must be a whole number of requests, 1 or more, "
                f"not {quota_text!r}"
            )
        api_base = _base_url("CTCT_API_BASE", text("CTCT_API_BASE") or DEFAULT_API_BASE)
        auth_base = _base_url("CTCT_AUTH_BASE", text("CTCT_AUTH_BASE") or DEFAULT_AUTH_BASE)
        return cls(
            client_id=text("CTCT_CLIENT_ID") or "",
            client_secret=text("CTCT_CLIENT_SECRET"),
            api_base=api_base,
            auth_base=auth_base,
            requests_per_second=rate,
            daily_quota=int(quota_text),
            key_vault_url=text("KEY_VAULT_URL"),
            home=ccexport_home(env),
            store_settings={k: env[k] for k in _STORE_KEYS if k in env},
            redirect_uri=text("CTCT_REDIRECT_URI"),
        )

    def require_client_id(self) -> str:
        if not self.client_id:
            raise ConfigError("CTCT_CLIENT_ID is not set (the API key of the Constant Contact app)")
        return self.client_id

    async def resolve_client_secret(self, store: SecretStore) -> str | None:
        """CTCT_CLIENT_SECRET, else the vault's ``ctct-client-secret`` when a vault is set.

        None means a public client (PKCE without a secret), as the local sandbox allows.
        """
        if self.client_secret:
            return self.client_secret
        if self.key_vault_url:
            return await store.get(CLIENT_SECRET_NAME)
        return None


def _base_url(name: str, value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ConfigError(f"{name} must be an http(s) URL, not {value[:80]!r}")
    return value.rstrip("/")


# --- the function app's storage layout --------------------------------------------------

STORAGE_CONNECTION = "CCEXPORT_STORAGE"
"""The connection name of the blob trigger and of the app's own data: either a setting
holding a connection string (locally) or ``CCEXPORT_STORAGE__blobServiceUri`` with
``__credential=managedidentity`` and ``__clientId`` (in Azure)."""
DEFAULT_QUIET_SECONDS = 120.0


@dataclass(frozen=True)
class AppSettings:
    """Containers, timing and the storage connection of the function app.

    | setting                   | default  |
    |---------------------------|----------|
    | INBOX_CONTAINER           | inbox    |
    | STAGING_CONTAINER         | staging  |
    | REPORTS_CONTAINER         | reports  |
    | EXPORTS_CONTAINER         | exports  |
    | RUN_QUIET_SECONDS         | 120: a run folder unchanged this long counts as complete |
    | RUN_POLL_SECONDS          | unset (10): time before a run's first import status poll |
    | CCEXPORT_STORAGE          | a connection string (local); else the identity settings |
    | CCEXPORT_STORAGE__blobServiceUri, __clientId | identity-based connection (Azure) |
    | CCEXPORT_STORAGE_CONNECTION_STRING, AzureWebJobsStorage | fallback connection strings |
    | CCEXPORT_LOCAL_INBOX      | no storage connection: this folder is the inbox (serve) |

    With ``CCEXPORT_LOCAL_INBOX`` and no storage connection (``ccexport serve`` on one
    machine), definitions, connections, run records and locks live under CCEXPORT_HOME.
    """

    inbox_container: str = "inbox"
    staging_container: str = "staging"
    reports_container: str = "reports"
    exports_container: str = "exports"
    quiet_seconds: float = DEFAULT_QUIET_SECONDS
    poll_seconds: float | None = None
    """The first status poll of the runs this app starts (RunOptions.poll_seconds); None
    keeps the runs' default. A shorter one is for an account whose imports end in
    seconds, such as the local sandbox the tests run against."""
    connection_string: str | None = field(default=None, repr=False)
    blob_service_uri: str | None = None
    identity_client_id: str | None = None
    local_inbox: Path | None = None
    home: Path = field(default_factory=lambda: Path.home() / ".ccexport")

    @property
    def has_storage(self) -> bool:
        return bool(self.connection_string or self.blob_service_uri)

    @property
    def is_local(self) -> bool:
        """No storage connection, and an inbox folder on this machine instead."""
        return not self.has_storage and self.local_inbox is not None

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> AppSettings:
        def text(name: str, default: str = "") -> str:
            return env.get(name, "").strip() or default

        quiet_text = text("RUN_QUIET_SECONDS", str(DEFAULT_QUIET_SECONDS))
        try:
            quiet = float(quiet_text)
        except ValueError:
            quiet = -1.0
        if not 0 <= quiet <= 86_400:
            raise ConfigError(
                f"RUN_QUIET_SECONDS must be a number of seconds from 0 to 86400, not {quiet_text!r}"
            )
        poll_text = text("RUN_POLL_SECONDS")
        try:
            poll = float(poll_text) if poll_text else None
        except ValueError:
            poll = -1.0
        if poll is not None and not 0 < poll <= 3600:
            raise ConfigError(
                f"RUN_POLL_SECONDS must be a number of seconds above 0, at most 3600, "
                f"not {poll_text!r}"
            )
        direct = text(STORAGE_CONNECTION)
        uri = text(f"{STORAGE_CONNECTION}__blobServiceUri") or None
        fallback = next(
            (
                text(name)
                for name in ("CCEXPORT_STORAGE_CONNECTION_STRING", "AzureWebJobsStorage")
                if "=" in text(name)
            ),
            None,
        )
        return cls(
            inbox_container=text("INBOX_CONTAINER", "inbox"),
            staging_container=text("STAGING_CONTAINER", "staging"),
            reports_container=text("REPORTS_CONTAINER", "reports"),
            exports_container=text("EXPORTS_CONTAINER", "exports"),
            quiet_seconds=quiet,
            poll_seconds=poll,
            connection_string=direct if "=" in direct else (None if uri else fallback),
            blob_service_uri=uri,
            identity_client_id=text(f"{STORAGE_CONNECTION}__clientId") or None,
            local_inbox=Path(text("CCEXPORT_LOCAL_INBOX")).expanduser()
            if text("CCEXPORT_LOCAL_INBOX")
            else None,
            home=ccexport_home(env),
        )

    def require_storage(self) -> None:
        if not self.has_storage:
            raise ConfigError(
                f"no storage connection: set {STORAGE_CONNECTION}__blobServiceUri (Azure) or "
                f"{STORAGE_CONNECTION} / CCEXPORT_STORAGE_CONNECTION_STRING (a connection string)"
            )


@dataclass(frozen=True)
class Config:
    """Every setting one process reads, parsed once at its edge and passed down.

    ``shared.wiring`` builds the clients from it; nothing below reads the environment.
    """

    ctct: Settings
    """Constant Contact, the API key's rate, the secret store's settings."""
    app: AppSettings
    """Containers, the storage connection, timing."""

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Config:
        """Parse app settings (os.environ or the function app's); bad values are a ConfigError."""
        return cls(ctct=Settings.from_mapping(env), app=AppSettings.from_mapping(env))

    @property
    def home(self) -> Path:
        """CCEXPORT_HOME: local state, secrets and locks of this machine."""
        return self.app.home
