"""Where secrets live: Azure Key Vault in the cloud, a private folder on a laptop.

Both stores speak one small async interface, so the token logic stores a connection's
whole token bundle (access token, refresh token, expiry) as one JSON value: one write,
one new version, never half a rotation.

Values never reach a log line or an exception message: errors name the secret and the
operation, never what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import CredentialUnavailableError
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

from shared.atomic_files import write_atomically
from shared.closing import AsyncClosing
from shared.errors import CcexportError

# Defined in shared.settings (which the run store imports without this module's Azure
# SDKs); still exported from here.
from shared.settings import ccexport_home as ccexport_home  # noqa: PLC0414 - re-export

log = logging.getLogger(__name__)

# Tag that keeps the caller's name when it had to be rewritten for Key Vault.
NAME_TAG = "ccexport-name"
_MAX_NAME = 256
_VAULT_NAME = re.compile(r"^[0-9a-z-]{1,127}$")
_DIGEST_CHARS = 16
_STALE_TEMP_SECONDS = 300


class SecretStoreError(CcexportError):
    """A secret could not be read, written or deleted. The message never holds a value."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class SecretStore(Protocol):
    """A place for named secrets. Every `set` replaces the whole value at once."""

    async def get(self, name: str) -> str | None:
        """The current value, or None when no such secret exists."""
        ...

    async def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Store a new value (a new version in Key Vault) atomically."""
        ...

    async def delete(self, name: str) -> bool:
        """Remove the secret; True when there was one."""
        ...

    async def names(self, prefix: str = "") -> list[str]:
        """The names of stored secrets that start with prefix, sorted."""
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def storage_name(name: str) -> str:
    """A deterministic name that Key Vault and every file system accept.

    Key Vault allows letters, digits and dashes, up to 127 characters, and ignores
    case. A name already in that form (lower case) is kept so operators recognise it;
    any other name is folded to that alphabet and suffixed with a digest of the
    original, so names that fold alike (`Acme`, `acme`, `a_b`, `a.b`) stay apart.
    """
    check_name(name)
    if _VAULT_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST_CHARS]
    folded = re.sub(r"[^0-9a-z]+", "-", name.lower()).strip("-")
    folded = folded[: 127 - _DIGEST_CHARS - 1].rstrip("-")
    return f"{folded}-{digest}" if folded else digest


def check_name(name: str) -> None:
    """Reject names no store can hold faithfully (empty, huge, control characters)."""
    if not name or len(name) > _MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise SecretStoreError(
            f"invalid secret name (1–{_MAX_NAME} printable characters): {name[:40]!r}"
        )


def open_secret_store(settings: Mapping[str, str], **vault_options: Any) -> SecretStore:
    """The store the settings ask for: Key Vault when KEY_VAULT_URL is set, else files.

    Files live under CCEXPORT_HOME (default ~/.ccexport). The Key Vault store owns the
    credential it builds and closes it with itself. `vault_options` go to
    KeyVaultSecretStore (tests point TLS and the challenge check at the local fake).

    What the app deletes it means to be gone: a deleted connection's tokens (a refresh
    token stays valid at Constant Contact for months, and no revocation endpoint is
    documented), a spent PKCE verifier. So deletes purge the soft-deleted secret too,
    where the vault allows it (with purge protection on, it stays recoverable by vault
    admins until its retention ends, and a warning says so).
    """
    vault_url = settings.get("KEY_VAULT_URL", "").strip()
    if vault_url:
        options = {"purge_on_delete": True, **vault_options}
        return KeyVaultSecretStore(
            vault_url, default_credential(settings), close_credential=True, **options
        )
    return LocalFileSecretStore(ccexport_home(settings))


# --- Key Vault ---------------------------------------------------------------------


def default_credential(
    settings: Mapping[str, str], *, retry_total: int = 3, retry_backoff_factor: float = 0.5
) -> DefaultAzureCredential:
    """The credential the app uses in Azure: its managed identity, else a developer login.

    `AZURE_CLIENT_ID` selects a user-assigned identity. Interactive and cached-login
    sources are left out: a function app must never wait for a browser. Token
    requests retry a bounded number of times (azure-core's default is ten).
    """
    client_id = settings.get("AZURE_CLIENT_ID") or None
    return DefaultAzureCredential(
        managed_identity_client_id=client_id,
        exclude_interactive_browser_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_visual_studio_code_credential=True,
        retry_total=retry_total,
        retry_backoff_factor=retry_backoff_factor,
        retry_backoff_max=8,
    )


def managed_identity_credential(
    settings: Mapping[str, str], *, retry_total: int = 3, retry_backoff_factor: float = 0.5
) -> ManagedIdentityCredential:
    """Only the managed identity: for deployments that must not fall back to anything."""
    client_id = settings.get("AZURE_CLIENT_ID") or None
    return ManagedIdentityCredential(
        client_id=client_id,
        retry_total=retry_total,
        retry_backoff_factor=retry_backoff_factor,
        retry_backoff_max=8,
    )


def _server_code(exc: HttpResponseError) -> str | None:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return code if isinstance(code, str) else None


def _is_deleted_but_recoverable(exc: HttpResponseError) -> bool:
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) or {}
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    return inner_code == "ObjectIsDeletedButRecoverable" or "deleted but recoverable" in str(
        getattr(error, "message", "")
    )


def _from_vault(exc: AzureError, vault_url: str) -> bool:
    """Whether an error is Key Vault's own answer (not the identity endpoint's)."""
    response = getattr(exc, "response", None)
    request = getattr(response, "request", None)
    url = str(getattr(request, "url", "") or "")
    return url.startswith(vault_url.rstrip("/") + "/")


def _wrap(
    operation: str, name: str, exc: AzureError, vault_url: str, value: str | None = None
) -> SecretStoreError:
    """Our error for a failed Key Vault call: operation, name, status and code only.

    Key Vault's own message is kept for 401/403 (it says which permission is
    missing), with the value scrubbed in case anything ever echoes it; an identity
    endpoint's response is never quoted (a malformed one could hold a token).
    """
    code: str | None = None
    status: int | None = None
    if isinstance(exc, CredentialUnavailableError):
        # No identity answered at all, so the message holds no response content.
        detail = f"no credential available: {str(exc).splitlines()[0][:300]}"
    elif isinstance(exc, ClientAuthenticationError) and not _from_vault(exc, vault_url):
        # The identity endpoint refused us; its response body stays out of our text.
        status = exc.status_code
        detail = "authentication failed" + (f" (HTTP {status})" if status else "")
    elif isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        code = _server_code(exc)
        detail = f"HTTP {status}" + (f" {code}" if code else "")
        if status in {401, 403}:
            message = str(getattr(getattr(exc, "error", None), "message", "") or "")
            if value:
                message = message.replace(value, "***")
            detail += f": {message[:300]}" if message else ""
    else:
        detail = type(exc).__name__
    return SecretStoreError(
        f"Key Vault could not {operation} secret {name!r}: {detail}", status=status, code=code
    )


class KeyVaultSecretStore(AsyncClosing):
    """Secrets in Azure Key Vault, through the official async SDK.

    Retries are bounded (a token refresh should fail in seconds, not minutes), HTTP
    bodies are never logged, and the caller's name is kept in a tag so `names()` can
    give back names that had to be rewritten for the vault.

    `verify_challenge_resource=False` and `connection_verify=<CA file>` exist for a
    local vault on 127.0.0.1. A CA file makes azure-core build a TLS context per
    request, so connections are not reused (about 11 ms instead of 2 ms a read,
    measured on the local fake); a CA in SSL_CERT_FILE keeps the pool.
    """

    def __init__(
        self,
        vault_url: str,
        credential: AsyncTokenCredential,
        *,
        verify_challenge_resource: bool = True,
        connection_verify: str | bool | None = None,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.5,
        retry_backoff_max: float = 8.0,
        connection_timeout: float = 10.0,
        read_timeout: float = 30.0,
        purge_on_delete: bool = False,
        close_credential: bool = False,
    ) -> None:
        options: dict[str, Any] = {
            "verify_challenge_resource": verify_challenge_resource,
            "retry_total": retry_total,
            "retry_backoff_factor": retry_backoff_factor,
            "retry_backoff_max": retry_backoff_max,
            "connection_timeout": connection_timeout,
            "read_timeout": read_timeout,
            # Never the network trace: it would log request and response bodies.
            "logging_enable": False,
        }
        if connection_verify is not None:
            options["connection_verify"] = connection_verify
        self._client = SecretClient(vault_url, credential, **options)
        self._url = vault_url
        self._purge_on_delete = purge_on_delete
        self._credential = credential if close_credential else None

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()

    async def get(self, name: str) -> str | None:
        vault_name = storage_name(name)
        try:
            secret = await self._client.get_secret(vault_name)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _wrap("read", name, exc, self._url) from None
        return secret.value

    async def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        vault_name = storage_name(name)
        all_tags = {**(tags or {}), NAME_TAG: name}
        try:
            try:
                await self._client.set_secret(
                    vault_name, value, content_type=content_type, tags=all_tags
                )
            except ResourceExistsError as exc:
                if not _is_deleted_but_recoverable(exc):
                    raise
                # Deleted earlier but not purged: the name is taken until we recover it.
                log.info("recovering soft-deleted secret %r before writing it", name)
                await self._client.recover_deleted_secret(vault_name)
                await self._client.set_secret(
                    vault_name, value, content_type=content_type, tags=all_tags
                )
        except AzureError as exc:
            raise _wrap("write", name, exc, self._url, value) from None
        log.debug("stored a new version of secret %r", name)

    async def delete(self, name: str) -> bool:
        vault_name = storage_name(name)
        try:
            await self._client.delete_secret(vault_name)
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise _wrap("delete", name, exc, self._url) from None
        if self._purge_on_delete:
            try:
                await self._client.purge_deleted_secret(vault_name)
            except HttpResponseError as exc:
                if exc.status_code != 403:
                    raise _wrap("purge", name, exc, self._url) from None
                # No purge permission (or purge protection): it stays recoverable.
                log.warning("secret %r deleted but not purged: HTTP 403", name)
            except AzureError as exc:
                raise _wrap("purge", name, exc, self._url) from None
        return True

    async def names(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        try:
            async for props in self._client.list_properties_of_secrets():
                if props.managed or props.name is None:
                    continue  # certificate-backed secrets are not ours
                original = (props.tags or {}).get(NAME_TAG, props.name)
                if original.startswith(prefix):
                    found.append(original)
        except AzureError as exc:
            raise _wrap("list", prefix or "*", exc, self._url) from None
        return sorted(found)


# --- local files -------------------------------------------------------------------


class LocalFileSecretStore(AsyncClosing):
    """Secrets as private files under `<home>/secrets/`, for the command line.

    One JSON file per secret, mode 0600 in a 0700 folder. Every write goes to a
    temporary file that is fsynced and then renamed over the old one, so a crash
    leaves either the old value or the new one, never half a token.
    """

    def __init__(self, home: Path) -> None:
        self._dir = home / "secrets"

    @property
    def directory(self) -> Path:
        return self._dir

    def path_of(self, name: str) -> Path:
        return self._dir / f"{storage_name(name)}.json"

    async def get(self, name: str) -> str | None:
        return await asyncio.to_thread(self._get, name)

    async def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        record = {
            "name": name,
            "value": value,
            "content_type": content_type,
            "tags": dict(tags or {}),
            "updated": time.time(),
        }
        await asyncio.to_thread(self._write, name, json.dumps(record).encode())

    async def delete(self, name: str) -> bool:
        return await asyncio.to_thread(self._delete, name)

    async def names(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(self._names, prefix)

    # -- blocking parts, run in a worker thread --

    def _ensure_dir(self) -> None:
        self._dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._dir.mkdir(mode=0o700, exist_ok=True)
        if self._dir.stat().st_mode & 0o077:
            self._dir.chmod(0o700)

    def _read_record(self, path: Path, name: str) -> dict[str, Any] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretStoreError(
                f"cannot read secret {name!r} from {path}: {exc.strerror}"
            ) from None
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("value"), str):
            raise SecretStoreError(f"secret file {path} is not a ccexport secret (corrupt?)")
        return record

    def _get(self, name: str) -> str | None:
        record = self._read_record(self.path_of(name), name)
        if record is None:
            return None
        value: str = record["value"]
        return value

    def _write(self, name: str, data: bytes) -> None:
        path = self.path_of(name)
        try:
            self._ensure_dir()
            # created 0600 by mkstemp and renamed over the old value: never readable
            # by others, never half written
            write_atomically(path, data, durable=True)
            self._fsync_dir()
        except OSError as exc:
            raise SecretStoreError(
                f"cannot write secret {name!r} to {path}: {exc.strerror}"
            ) from None

    def _sweep_temp_files(self) -> None:
        """Remove temporary files a killed writer left behind (old enough to be dead)."""
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for path in self._dir.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable; not every platform allows it.
        with contextlib.suppress(OSError):
            dir_fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _delete(self, name: str) -> bool:
        path = self.path_of(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SecretStoreError(f"cannot delete secret {name!r}: {exc.strerror}") from None
        self._fsync_dir()
        return True

    def _names(self, prefix: str) -> list[str]:
        if not self._dir.is_dir():
            return []
        found: list[str] = []
        for path in self._dir.glob("*.json"):
            if path.name.startswith(".tmp-"):
                continue
            record = self._read_record(path, path.stem)
            if record is None:
                continue  # deleted while we listed
            name = record.get("name")
            if isinstance(name, str) and name.startswith(prefix):
                found.append(name)
        return sorted(found)
