"""Secrets: the store protocol, files on this machine, Azure Key Vault.

``store`` (``SecretStore``, ``SecretStoreError``, ``LocalFileSecretStore``),
``keyvault`` (``KeyVaultSecretStore``; its Azure SDKs load only when a vault is set),
``opening`` (``open_secret_store``: the one the settings name). Values never reach a
log line or an error.
"""
