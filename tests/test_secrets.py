"""The secret stores: Key Vault through the real SDK against the local fake, and files.

Every test here runs with a socket guard: a connection (or a name lookup) for
anything but loopback fails the test before a packet leaves, so no credential can
probe a cloud metadata address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.secrets.aio import SecretClient

from shared.config import ccexport_home
from shared.secrets.keyvault import (
    NAME_TAG,
    KeyVaultSecretStore,
    default_credential,
    managed_identity_credential,
)
from shared.secrets.opening import open_secret_store
from shared.secrets.store import LocalFileSecretStore, SecretStoreError, storage_name
from tests.support.keyvault_fake import CLOUD_IDENTITY_VARS, KeyVaultFake
from tests.support.services import ROOT


class OffLoopback(AssertionError):
    """A test tried to reach something other than 127.0.0.1."""


def _check_host(host: object) -> None:
    if host in {"localhost", None}:
        return
    try:
        if ipaddress.ip_address(str(host)).is_loopback:
            return
    except ValueError:
        pass
    raise OffLoopback(f"blocked a connection to {host!r}: tests talk only to 127.0.0.1")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail on any connection or lookup that is not loopback; record where we went."""
    seen: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family != socket.AF_UNIX:
            seen.append(address)
            _check_host(address[0])
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family != socket.AF_UNIX:
            seen.append(address)
            _check_host(address[0])
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        _check_host(host.decode() if isinstance(host, bytes) else host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


@pytest.fixture
def identity_env(keyvault: KeyVaultFake, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point managed identity at the fake and remove every route to a real cloud."""
    for var in CLOUD_IDENTITY_VARS:
        monkeypatch.delenv(var, raising=False)
    env = keyvault.identity_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _store(keyvault: KeyVaultFake, credential: Any = None, **options: Any) -> KeyVaultSecretStore:
    options.setdefault("retry_backoff_factor", 0.01)
    return KeyVaultSecretStore(
        keyvault.url,
        credential if credential is not None else keyvault.credential(),
        verify_challenge_resource=False,
        connection_verify=str(keyvault.ca_path),
        **options,
    )


def _value() -> str:
    return "tok-" + secrets.token_urlsafe(24)


# --- names -------------------------------------------------------------------------


def test_vault_legal_names_are_kept_and_others_are_folded_apart() -> None:
    assert storage_name("ctct-tokens-default") == "ctct-tokens-default"
    folded = {n: storage_name(n) for n in ["Acme", "acme", "a_b", "a.b", "a b", "ä", "x" * 256]}
    assert folded["acme"] == "acme"
    assert len(set(folded.values())) == len(folded)  # no two names share a vault name
    for original, name in folded.items():
        assert name == storage_name(original)  # deterministic
        assert 1 <= len(name) <= 127
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in name)
        assert name == name.lower()  # Key Vault ignores case; so must we


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * 257, "tab\tname"])
def test_unstorable_names_are_refused(bad: str) -> None:
    with pytest.raises(SecretStoreError):
        storage_name(bad)


# --- Key Vault through the real SDK ------------------------------------------------


async def test_key_vault_round_trip(keyvault: KeyVaultFake) -> None:
    first, second = _value(), _value()
    async with _store(keyvault) as store:
        assert await store.get("ctct-tokens-default") is None
        await store.set("ctct-tokens-default", first, content_type="application/json")
        assert await store.get("ctct-tokens-default") == first
        await store.set("ctct-tokens-default", second)
        assert await store.get("ctct-tokens-default") == second
        assert keyvault.version_count("ctct-tokens-default") == 2  # overwrite = new version
        assert await store.delete("ctct-tokens-default") is True
        assert await store.get("ctct-tokens-default") is None
        assert await store.delete("ctct-tokens-default") is False
    # The SDK met a real challenge: the first request went out without a token.
    assert keyvault.requests[0].authorized is False
    assert all(r.authorized for r in keyvault.requests[1:])


async def test_folded_names_round_trip_and_list_by_original_name(keyvault: KeyVaultFake) -> None:
    value = _value()
    async with _store(keyvault) as store:
        await store.set("Acme Corp / tokens ✓", value, tags={"connection": "acme"})
        await store.set("ctct-tokens-b", _value())
        await store.set("other", _value())
        assert await store.get("Acme Corp / tokens ✓") == value
        assert await store.get("acme corp / tokens ✓") is None  # a different name
        assert await store.names("ctct-") == ["ctct-tokens-b"]
        assert await store.names() == ["Acme Corp / tokens ✓", "ctct-tokens-b", "other"]
    async with SecretClient(
        keyvault.url,
        keyvault.credential(),
        verify_challenge_resource=False,
        connection_verify=str(keyvault.ca_path),
    ) as client:
        secret = await client.get_secret(storage_name("Acme Corp / tokens ✓"))
        assert secret.properties.tags == {"connection": "acme", NAME_TAG: "Acme Corp / tokens ✓"}


async def test_listing_follows_next_links_over_many_secrets(keyvault: KeyVaultFake) -> None:
    async with _store(keyvault) as store:
        await asyncio.gather(*(store.set(f"conn-{i:03}", _value()) for i in range(60)))
        assert await store.names("conn-") == [f"conn-{i:03}" for i in range(60)]
    pages = [r for r in keyvault.requests if r.method == "GET" and r.path == "/secrets"]
    assert len(pages) == 3  # 25 + 25 + 10: Key Vault's page size
    assert "$skiptoken" in pages[1].query


async def test_many_versions_page_through_the_sdk(keyvault: KeyVaultFake) -> None:
    async with _store(keyvault) as store:
        for _ in range(30):
            await store.set("rotating", _value())
    async with SecretClient(
        keyvault.url,
        keyvault.credential(),
        verify_challenge_resource=False,
        connection_verify=str(keyvault.ca_path),
    ) as client:
        versions = [
            p.version
            async for p in client.list_properties_of_secret_versions("rotating", max_page_size=7)
        ]
        latest = await client.get_secret("rotating")
        oldest = await client.get_secret("rotating", versions[0])
    assert len(versions) == len(set(versions)) == 30
    assert latest.properties.version == versions[-1]
    assert oldest.value != latest.value
    pages = [r for r in keyvault.requests if r.path == "/secrets/rotating/versions"]
    assert len(pages) == 5  # ceil(30 / 7)


async def test_delete_then_write_again_recovers_the_soft_deleted_name(
    keyvault: KeyVaultFake,
) -> None:
    value = _value()
    async with _store(keyvault) as store:
        await store.set("conn", _value())
        await store.delete("conn")
        await store.set("conn", value)  # Key Vault answers 409 until recovered
        assert await store.get("conn") == value
    assert any(r.path == "/deletedsecrets/conn/recover" for r in keyvault.requests)
    assert keyvault.version_count("conn") == 2


async def test_purge_on_delete_frees_the_name(keyvault: KeyVaultFake) -> None:
    async with _store(keyvault, purge_on_delete=True) as store:
        await store.set("conn", _value())
        assert await store.delete("conn") is True
        assert keyvault.version_count("conn") == 0
        await store.set("conn", "fresh")
        assert await store.get("conn") == "fresh"
    methods = [(r.method, r.path) for r in keyvault.requests]
    assert ("DELETE", "/deletedsecrets/conn") in methods
    assert not any(path.endswith("/recover") for _, path in methods)


async def test_transient_errors_are_retried(keyvault: KeyVaultFake) -> None:
    async with _store(keyvault) as store:
        await store.set("conn", "a")  # challenge done; faults now hit real calls
        keyvault.fail_next(2, 503)
        assert await store.get("conn") == "a"
        keyvault.fail_next(1, 429, retry_after=0.3)
        started = time.monotonic()
        await store.set("conn", "b")
        assert time.monotonic() - started >= 0.3  # Retry-After honoured
        assert await store.get("conn") == "b"


async def test_retries_are_bounded_and_errors_carry_no_value(keyvault: KeyVaultFake) -> None:
    value = _value()
    async with _store(keyvault) as store:  # production retry count, short backoff
        await store.set("conn", _value())
        before = len(keyvault.requests)
        keyvault.fail_next(100, 500)
        with pytest.raises(SecretStoreError) as caught:
            await store.set("conn", value)
    assert len(keyvault.requests) - before == 4  # one try + 3 retries, then give up
    assert caught.value.status == 500
    assert "conn" in str(caught.value)
    assert value not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is not None
    assert caught.value.__suppress_context__


async def test_no_retry_fails_fast(keyvault: KeyVaultFake) -> None:
    async with _store(keyvault, retry_total=0) as store:
        keyvault.fail_next(1, 503)
        started = time.monotonic()
        with pytest.raises(SecretStoreError, match="HTTP 503"):
            await store.get("conn")
        assert time.monotonic() - started < 1.0


async def test_unreachable_vault_is_a_store_error(keyvault: KeyVaultFake) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    store = KeyVaultSecretStore(
        f"https://127.0.0.1:{closed_port}",
        keyvault.credential(),
        verify_challenge_resource=False,
        connection_verify=str(keyvault.ca_path),
        retry_total=0,
    )
    async with store:
        with pytest.raises(SecretStoreError, match="ServiceRequestError"):
            await store.get("conn")


async def test_untrusted_certificate_is_refused(keyvault: KeyVaultFake) -> None:
    store = KeyVaultSecretStore(
        keyvault.url, keyvault.credential(), verify_challenge_resource=False, retry_total=0
    )
    async with store:
        with pytest.raises(SecretStoreError):
            await store.get("conn")
    assert keyvault.requests == []  # the TLS handshake failed before any request


async def test_challenge_resource_is_verified_by_default(keyvault: KeyVaultFake) -> None:
    # Production keeps the SDK's check that the challenge names the vault's domain.
    store = KeyVaultSecretStore(
        keyvault.url, keyvault.credential(), connection_verify=str(keyvault.ca_path)
    )
    async with store:
        with pytest.raises(ValueError, match="does not match the requested domain"):
            await store.get("conn")


# --- managed identity, through the fake's endpoint ---------------------------------


async def test_default_credential_uses_the_managed_identity_endpoint(
    keyvault: KeyVaultFake, identity_env: dict[str, str], loopback_only: list[Any]
) -> None:
    value = _value()
    async with (
        default_credential({"AZURE_CLIENT_ID": "user-assigned-id"}) as credential,
        _store(keyvault, credential) as store,
    ):
        await store.set("conn", value)
        assert await store.get("conn") == value
    identity = [r for r in keyvault.requests if r.target == "identity"]
    assert len(identity) == 1  # one token, cached for the client's lifetime
    assert identity[0].query["client_id"] == "user-assigned-id"
    assert identity[0].query["resource"] == "https://vault.azure.net"
    assert keyvault.identity_tokens_issued == 1
    assert all(r.authorized for r in keyvault.requests if r.target == "vault" and r.method == "GET")
    assert loopback_only  # the guard saw the traffic...
    assert {a[0] for a in loopback_only} == {"127.0.0.1"}  # ...and it was all local


async def test_managed_identity_credential_path(
    keyvault: KeyVaultFake, identity_env: dict[str, str]
) -> None:
    async with managed_identity_credential({}) as credential, _store(keyvault, credential) as s:
        await s.set("conn", "x")
        assert await s.get("conn") == "x"
    identity = [r for r in keyvault.requests if r.target == "identity"]
    assert len(identity) == 1
    assert "client_id" not in identity[0].query  # system-assigned


async def test_wrong_identity_header_is_an_authentication_error(
    keyvault: KeyVaultFake, identity_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    async with (
        managed_identity_credential({}) as credential,
        _store(keyvault, credential, retry_total=0) as store,
    ):
        with pytest.raises(SecretStoreError, match="authentication failed"):
            await store.get("conn")
    assert keyvault.identity_tokens_issued == 0


async def test_the_guard_blocks_the_metadata_address() -> None:
    # Proves the guard bites without sending anything anywhere: the guard is what
    # connect and name lookups go through here, and it refuses the metadata address
    # and a cloud host name (should it ever break, this test must not become traffic).
    assert socket.socket.connect.__qualname__.startswith("loopback_only")
    assert socket.getaddrinfo.__qualname__.startswith("loopback_only")
    for host in ("169.254.169.254", "login.microsoftonline.com", "10.0.0.1"):
        with pytest.raises(OffLoopback):
            _check_host(host)
    _check_host("127.0.0.1")
    _check_host("::1")


# --- nothing secret in logs or errors ----------------------------------------------


async def test_no_secret_or_token_in_any_log_line_or_error(
    keyvault: KeyVaultFake,
    identity_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # root: azure.*, aiohttp, shared.*, everything
    values = [_value() for _ in range(4)]
    stub = keyvault.credential()
    errors: list[str] = []
    async with default_credential({}) as credential:
        async with _store(keyvault, credential) as store:
            await store.set("conn-a", values[0], content_type="application/json")
            await store.get("conn-a")
            await store.delete("conn-a")
            await store.set("conn-a", values[1])  # recover path
            keyvault.fail_next(1, 429, retry_after=0.01)
            keyvault.fail_next(1, 403, method="PUT")
            try:
                await store.set("conn-b", values[2])
            except SecretStoreError as exc:
                errors.append(str(exc))
        async with _store(keyvault, stub, retry_total=0) as store:
            keyvault.fail_next(1, 500)
            try:
                await store.set("conn-c", values[3])
            except SecretStoreError as exc:
                errors.append(str(exc))
    local = LocalFileSecretStore(tmp_path)
    await local.set("conn-d", values[0])
    await local.get("conn-d")
    (local.path_of("conn-e")).parent.mkdir(parents=True, exist_ok=True)
    local.path_of("conn-e").write_text(json.dumps({"value": 7, "secret": values[1]}))
    try:
        await local.get("conn-e")
    except SecretStoreError as exc:
        errors.append(str(exc))

    assert len(errors) == 3
    logged = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    http_lines = [line for line in logged if "Authorization" in line]
    assert http_lines, "the HTTP logging policy should have logged request headers"
    assert all("REDACTED" in line for line in http_lines)
    # Every token the fake issued or accepted, and every value, is absent everywhere.
    forbidden = [*values, *keyvault.stored_values(), *keyvault.accepted_tokens()]
    assert len(forbidden) > len(values)
    for text in logged + errors:
        for secret in forbidden:
            assert secret not in text


# --- local files -------------------------------------------------------------------


async def test_local_round_trip(tmp_path: Path) -> None:
    store = LocalFileSecretStore(tmp_path / "home")
    assert await store.get("conn") is None
    assert await store.names() == []
    await store.set("conn", "one", content_type="application/json", tags={"k": "v"})
    await store.set("Acme Corp / tokens", "two")
    await store.set("conn", "three")
    assert await store.get("conn") == "three"
    assert await store.get("Acme Corp / tokens") == "two"
    assert await store.names() == ["Acme Corp / tokens", "conn"]
    assert await store.names("Acme") == ["Acme Corp / tokens"]
    assert await store.delete("conn") is True
    assert await store.delete("conn") is False
    assert await store.get("conn") is None


async def test_local_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a typical, permissive umask
    try:
        store = LocalFileSecretStore(tmp_path / "home")
        await store.set("conn", "v")
        await store.set("conn", "w")  # rewritten files stay private too
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(store.path_of("conn")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "home").st_mode) == 0o700


async def test_local_directory_with_loose_mode_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir(mode=0o755)
    os.chmod(tmp_path / "secrets", 0o755)
    await LocalFileSecretStore(tmp_path).set("conn", "v")
    assert stat.S_IMODE(os.stat(tmp_path / "secrets").st_mode) == 0o700


async def test_local_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    store = LocalFileSecretStore(tmp_path)
    await store.set("conn", "old")
    before = os.stat(store.path_of("conn")).st_ino
    await store.set("conn", "new")
    assert os.stat(store.path_of("conn")).st_ino != before  # a new file renamed in place
    assert sorted(p.name for p in store.directory.iterdir()) == [store.path_of("conn").name]


async def test_corrupt_local_file_is_an_error_without_its_content(tmp_path: Path) -> None:
    store = LocalFileSecretStore(tmp_path)
    await store.set("conn", "v")
    store.path_of("conn").write_text('{"value": "half-a-tok')
    with pytest.raises(SecretStoreError, match="corrupt") as caught:
        await store.get("conn")
    assert "half-a-tok" not in str(caught.value)


_WRITER = """
import asyncio, sys
from pathlib import Path
from shared.secrets.store import LocalFileSecretStore

async def main() -> None:
    store = LocalFileSecretStore(Path(sys.argv[1]))
    tag, rounds = sys.argv[2], int(sys.argv[3])
    print("ready", flush=True)
    for i in range(rounds):
        await store.set("conn", f"{tag}-{i}-" + "x" * 200_000)

asyncio.run(main())
"""


def _writer(home: Path, tag: str, rounds: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(home), tag, str(rounds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _is_whole(value: str | None, tags: set[str]) -> bool:
    if value is None:
        return False
    tag, _, rest = value.partition("-")
    return tag in tags and rest.endswith("-" + "x" * 200_000)


async def test_concurrent_writers_and_readers_never_see_half_a_value(tmp_path: Path) -> None:
    store = LocalFileSecretStore(tmp_path)
    await store.set("conn", "a-0-" + "x" * 200_000)
    writers = [_writer(tmp_path, tag, 40) for tag in ("a", "b")]
    reads = 0
    try:
        while any(w.poll() is None for w in writers):
            assert _is_whole(await store.get("conn"), {"a", "b"})
            reads += 1
    finally:
        for w in writers:
            w.wait(timeout=30)
            if w.stdout:
                w.stdout.close()
    assert all(w.returncode == 0 for w in writers)
    assert reads > 10
    assert _is_whole(await store.get("conn"), {"a", "b"})
    assert [p.name for p in store.directory.iterdir()] == [store.path_of("conn").name]


async def test_a_killed_writer_leaves_the_old_or_the_new_value(tmp_path: Path) -> None:
    store = LocalFileSecretStore(tmp_path)
    await store.set("conn", "k-start-" + "x" * 200_000)
    for delay in (0.05, 0.12, 0.2):
        writer = _writer(tmp_path, "k", 10_000)
        await asyncio.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        if writer.stdout:
            writer.stdout.close()
        assert _is_whole(await store.get("conn"), {"k"})
        assert await store.names() == ["conn"]  # leftover temp files are not secrets


# --- choosing the store from settings ----------------------------------------------


async def test_settings_without_a_vault_choose_local_files(tmp_path: Path) -> None:
    store = open_secret_store({"CCEXPORT_HOME": str(tmp_path / "state")})
    assert isinstance(store, LocalFileSecretStore)
    await store.set("conn", "v")
    assert (tmp_path / "state" / "secrets").is_dir()
    await store.close()
    assert ccexport_home({}) == Path.home() / ".ccexport"


async def test_settings_with_a_vault_choose_key_vault_and_managed_identity(
    keyvault: KeyVaultFake, identity_env: dict[str, str]
) -> None:
    store = open_secret_store(
        {"KEY_VAULT_URL": keyvault.url, "CCEXPORT_HOME": "/nonexistent"},
        verify_challenge_resource=False,
        connection_verify=str(keyvault.ca_path),
    )
    assert isinstance(store, KeyVaultSecretStore)
    async with store:
        await store.set("conn", "v")
        assert await store.get("conn") == "v"
    assert keyvault.identity_tokens_issued == 1


# --- more of the vault's behaviour -------------------------------------------------


async def test_a_disabled_secret_is_an_error_not_a_missing_one(keyvault: KeyVaultFake) -> None:
    async with _store(keyvault) as store:
        await store.set("conn", "v")
        async with SecretClient(
            keyvault.url,
            keyvault.credential(),
            verify_challenge_resource=False,
            connection_verify=str(keyvault.ca_path),
        ) as client:
            await client.update_secret_properties("conn", enabled=False)
        with pytest.raises(SecretStoreError, match="disabled") as caught:
            await store.get("conn")
    assert caught.value.status == 403


async def test_identity_endpoint_outage_is_retried_then_reported_in_bounded_time(
    keyvault: KeyVaultFake, identity_env: dict[str, str]
) -> None:
    keyvault.fail_next(1, 503, target="identity")
    async with (
        managed_identity_credential({}, retry_backoff_factor=0.01) as credential,
        _store(keyvault, credential) as store,
    ):
        await store.set("conn", "v")  # the token request was retried and succeeded
    keyvault.reset()
    keyvault.fail_next(100, 500, target="identity")
    async with (
        managed_identity_credential({}, retry_backoff_factor=0.01) as credential,
        _store(keyvault, credential, retry_total=0) as store,
    ):
        with pytest.raises(SecretStoreError, match="authentication failed") as caught:
            await store.get("conn")
    assert "Key Vault could not read secret 'conn'" in str(caught.value)
    assert "injected" not in str(caught.value)  # the endpoint's body is not quoted
    assert len([r for r in keyvault.requests if r.target == "identity"]) == 4  # 1 + 3 retries
