"""Secrets in Azure Key Vault, and the credentials the app reaches it with.

Kept apart from shared.secrets.store so that only a store that really talks to Key Vault
loads azure-identity (with msal and requests) and azure-keyvault-secrets: slow imports
that `ccexport run` and `connect` on local files never use.
shared.secrets.opening.open_secret_store imports this module when KEY_VAULT_URL is set.

Values never reach a log line or an exception message: errors name the secret and the
operation, never what it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

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

from shared.secrets.store import SecretStoreError, storage_name
from shared.storage.closing import AsyncClosing

log = logging.getLogger(__name__)

# Tag that keeps the caller's name when it had to be rewritten for Key Vault.
NAME_TAG = "ccexport-name"


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
    request, so connections are not reused and every read pays a new TLS handshake;
    a CA in SSL_CERT_FILE keeps the pool.
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
