"""Where secrets live: Azure Key Vault in the cloud, a private folder on a laptop.

Both stores speak one small async interface, so the token logic stores a connection's
whole token bundle (access token, refresh token, expiry) as one JSON value: one write,
one new version, never half a rotation.

The Key Vault store lives in shared.secrets.keyvault, imported only when the settings
name a vault: a run or connect on local files never loads azure-identity (msal,
requests) or azure-keyvault-secrets.

Values never reach a log line or an exception message: errors name the secret and the
operation, never what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

# Defined in shared.config (which the run store imports without this module's Azure
# SDKs); still exported from here.
from shared.config import ccexport_home as ccexport_home  # noqa: PLC0414 - re-export
from shared.errors import CcexportError
from shared.storage.atomic import write_atomically
from shared.storage.closing import AsyncClosing
from shared.storage.names import InvalidName
from shared.storage.names import storage_name as _storage_name

_STALE_TEMP_SECONDS = 300


class SecretStoreError(CcexportError):
    """A secret could not be read, written or deleted. The message never holds a value."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def storage_name(name: str) -> str:
    """The name a secret is stored under (shared.storage.names), refused as a store error."""
    try:
        return _storage_name(name)
    except InvalidName as exc:
        raise SecretStoreError(str(exc)) from None


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
