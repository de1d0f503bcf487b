"""Opening the secret store the settings name: Key Vault, or files on this machine.

Kept apart from the stores themselves so the Key Vault store (and its Azure SDKs) is
imported only here, and only when a vault is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.config import ccexport_home
from shared.secrets.store import LocalFileSecretStore, SecretStore


def open_secret_store(settings: Mapping[str, str], **vault_options: Any) -> SecretStore:
    """The store the settings ask for: Key Vault when KEY_VAULT_URL is set, else files.

    Files live under CCEXPORT_HOME (default ~/.ccexport). The Key Vault store owns the
    credential it builds and closes it with itself. `vault_options` go to
    shared.secrets.keyvault.KeyVaultSecretStore (tests point TLS and the challenge check
    at the local fake).

    What the app deletes it means to be gone: a deleted connection's tokens (a refresh
    token stays valid at Constant Contact for months, and no revocation endpoint is
    documented), a spent PKCE verifier. So deletes purge the soft-deleted secret too,
    where the vault allows it (with purge protection on, it stays recoverable by vault
    admins until its retention ends, and a warning says so).
    """
    vault_url = settings.get("KEY_VAULT_URL", "").strip()
    if vault_url:
        # Loads azure-identity (msal, requests) and azure-keyvault-secrets: only for a vault.
        from shared.secrets.keyvault import (  # noqa: PLC0415 - Azure SDKs only when used
            KeyVaultSecretStore,
            default_credential,
        )

        options = {"purge_on_delete": True, **vault_options}
        return KeyVaultSecretStore(
            vault_url, default_credential(settings), close_credential=True, **options
        )
    return LocalFileSecretStore(ccexport_home(settings))
