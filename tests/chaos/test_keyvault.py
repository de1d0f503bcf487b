"""An export run whose client secret and tokens live in Key Vault (the real SDK against
the local fake), while the vault keeps failing (503, 500, 429 with Retry-After), the
API answers 503 now and then and access tokens expire every second, so the run reads
and writes the vault all along. Nothing may be lost, and nothing secret or personal
may reach a log line: every log record of every logger, at DEBUG, is scanned for
every address of the input, every access and refresh token the vault ever held, and
the client secret. Afterwards only rejects.csv holds personal data, in a container
without public access.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from shared.config import CLIENT_SECRET_NAME, Config, Settings
from shared.constant_contact.pacing import Pacer
from shared.runs.activities import RunActivities, RunServices
from shared.secrets.keyvault import KeyVaultSecretStore
from shared.wiring import clients, stores
from tests.chaos.evidence import CountingActivities, Tally, aimed, met
from tests.chaos.figures import FIGURES
from tests.chaos.promises import (
    check_delivery,
    env_for,
    options,
    run_input,
    run_to_the_end,
    store_tokens,
)
from tests.chaos.scale import SCALE
from tests.chaos.segment import upload, write_segment
from tests.support.ctct_support import FAST
from tests.support.keyvault_fake import KeyVaultFake
from tests.support.sandbox_service import RunningSandbox

pytestmark = pytest.mark.azurite

VAULT_FAULTS = ((503, None), (500, None), (429, 0.2))
VAULT_STATUSES = {str(status) for status, _ in VAULT_FAULTS}
_RESPONSE_STATUS = re.compile(r"^Response status: '?(\d{3})")
_ADDRESS = re.compile(r"[^\s@'\"<>(),;]+@[^\s@'\"<>(),;]+")


def vault_store(keyvault: KeyVaultFake) -> KeyVaultSecretStore:
    """The app's Key Vault store, trusting the fake's certificate (retries as in production)."""
    return KeyVaultSecretStore(
        keyvault.url,
        keyvault.credential(),
        verify_challenge_resource=False,
        connection_verify=str(keyvault.ca_path),
        retry_backoff_factor=0.05,
    )


class VaultFaults:
    """Once started, one vault request in a few answers an error, until the test ends."""

    def __init__(self, keyvault: KeyVaultFake) -> None:
        self.keyvault = keyvault
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._inject, name="vault-faults", daemon=True)

    def _inject(self) -> None:
        n = 0
        while True:
            status, retry_after = VAULT_FAULTS[n % len(VAULT_FAULTS)]
            self.keyvault.fail_next(1, status, retry_after=retry_after)
            n += 1
            if self.stop.wait(0.3):
                return

    def start(self) -> None:
        self.thread.start()


@pytest.fixture
def vault_faults(keyvault: KeyVaultFake) -> Iterator[VaultFaults]:
    faults = VaultFaults(keyvault)
    yield faults
    faults.stop.set()
    if faults.thread.is_alive():
        faults.thread.join(timeout=5)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # the root: shared.*, aiohttp.*, azure.*, durabletask
    for name in ("aiohttp", "aiohttp.client", "aiohttp.access", "azure", "shared", "functions"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog


def test_key_vault_errors_lose_nothing_and_leak_nothing(
    chaos_sandbox: RunningSandbox,
    azurite: str,
    vault_faults: VaultFaults,
    all_logs: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    keyvault = vault_faults.keyvault
    segment = write_segment(tmp_path / "segment", SCALE.rows, seed=11, tag="vault")
    list_id = chaos_sandbox.create_list()
    chaos_sandbox.settings(access_token_ttl=1.0)
    env = env_for(chaos_sandbox, tmp_path / "home", azurite)
    client_secret = env.pop("CTCT_CLIENT_SECRET")  # the run reads it from the vault
    env["KEY_VAULT_URL"] = keyvault.url

    async def seed_vault() -> None:
        async with vault_store(keyvault) as store:
            await store.set(CLIENT_SECRET_NAME, client_secret)

    asyncio.run(seed_vault())
    refresh_token = store_tokens(chaos_sandbox, vault_store(keyvault), aged=True)  # at once
    source = upload(segment, azurite, "inbox", f"vault-{uuid.uuid4().hex[:8]}")
    run = run_input(source, list_id, options(SCALE.body_bytes))
    settings = Settings.from_mapping(env)
    assert settings.key_vault_url == keyvault.url
    assert settings.client_secret is None

    tally = Tally()

    def activities() -> RunActivities:
        config = Config.from_mapping(env)
        blob = stores.blob_service(config)
        secrets = vault_store(keyvault)
        locks = clients.token_locks(config)  # blob leases, as on Azure
        services = RunServices(
            settings=settings,
            runs=stores.run_store(config, blob),
            blob_service=blob,
            secrets=secrets,
            locks=locks,
            pacer=Pacer(40.0),
            connections=clients.connections(settings, secrets, locks),
            retry=FAST,
        )
        return CountingActivities(services, tally)

    authorization = met(chaos_sandbox, refresh_token).authorization
    chaos_sandbox.faults(**aimed(authorization, http_503={"rate": 0.10, "by": 3}))
    vault_before, logged_before = keyvault.faults_fired, len(all_logs.records)
    vault_faults.start()
    try:
        rounds = run_to_the_end(run, activities)
    finally:
        seen = met(chaos_sandbox, refresh_token)
        vault_fired = keyvault.faults_fired - vault_before
        FIGURES.fault("http_503", seen.faults["http_503"])
        FIGURES.fault("key_vault_errors", vault_fired)
    check_delivery(chaos_sandbox, list_id, segment, rounds.reports())
    # The API's 503s reached this run, and its clients sent each request again.
    assert seen.faults["http_503"] >= 1, "no API request of this run was answered 503"
    assert seen.answered("503") == seen.faults["http_503"]
    assert tally.client()["retries"] >= seen.faults["http_503"] - seen.faults["http_503"] // 4
    # The vault's errors reached this run (the only client of the vault while it ran):
    # the SDK's own log has every one of those answers, and its retries got through.
    assert vault_fired >= 1, "the vault should have failed during the run"
    statuses = [
        found.group(1)
        for record in all_logs.records[logged_before:]
        if record.name.startswith("azure.core")
        and (found := _RESPONSE_STATUS.match(record.getMessage())) is not None
    ]
    assert sum(status in VAULT_STATUSES for status in statuses) >= vault_fired, statuses
    bundles = [orjson.loads(v) for v in keyvault.stored_values() if v.startswith("{")]
    tokens = {str(b[k]) for b in bundles for k in ("access_token", "refresh_token") if b.get(k)}
    assert len(tokens) >= 3, "a refreshed token was stored in the vault during the run"

    # -- logs: no address, no token, no secret -----------------------------------------
    texts = [r.getMessage() for r in all_logs.records] + [
        r.exc_text or "" for r in all_logs.records
    ]
    assert any(r.name.startswith("azure") for r in all_logs.records), "the SDK logged"
    assert any("503" in t for t in texts), "the faults were logged"
    text = "\n".join(texts)
    lowered = text.lower()
    for secret in (*tokens, client_secret):
        assert secret not in text
    inputs = {e.lower() for e in segment.emails if "@" in e}
    assert not {a.lower() for a in _ADDRESS.findall(text)} & inputs
    for email in inputs:
        assert email not in lowered
    FIGURES.security("no email, token or secret in any log line of a run with faults (DEBUG)")

    # -- personal data: only in rejects.csv, in a private container ----------------------
    service = BlobServiceClient.from_connection_string(azurite)
    holding: list[str] = []
    for container in ("staging", "reports"):
        client = service.get_container_client(container)
        assert client.get_container_access_policy()["public_access"] is None
        for blob in client.list_blobs(name_starts_with=f"{run.run_id}/"):
            data = client.download_blob(blob.name).readall().decode("utf-8", "replace").lower()
            if any(email in data for email in inputs):
                holding.append(f"{container}/{blob.name}")
    assert holding == [f"reports/{run.run_id}/rejects.csv"]
    FIGURES.security("personal data only in rejects.csv, in a container without public access")
