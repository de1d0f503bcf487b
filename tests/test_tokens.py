"""OAuth tokens against the sandbox: PKCE connect, refresh ahead of expiry, rotation with
one refresh at a time, re-authorisation marks, Key Vault through the real SDK, and logs
that never hold a token, a secret or an email."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from shared.config import DEFAULT_API_BASE, DEFAULT_AUTH_BASE, Settings
from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.connect import Connections
from shared.constant_contact.oauth import InvalidGrant, OAuthClient, TokenBundle, code_challenge
from shared.constant_contact.pacing import Pacer
from shared.constant_contact.tokens import read_status, status_secret, tokens_secret
from shared.errors import AuthorizationError, ConfigError, ReauthorizationRequired, RemoteError
from shared.secrets.keyvault import KeyVaultSecretStore
from shared.secrets.store import LocalFileSecretStore, SecretStore
from shared.storage.locks import FileLocks
from tests.support.ctct_support import FAST
from tests.support.keyvault_fake import KeyVaultFake
from tests.support.sandbox_api import people
from tests.support.sandbox_service import RunningSandbox, running_sandbox

REDIRECT = "http://127.0.0.1:9/callback"
TOKEN_KEY = "POST /oauth2/default/v1/token"


@pytest.fixture(scope="module")
def rotating() -> Iterator[RunningSandbox]:
    """A sandbox with single-use refresh tokens and no limits, shared by this module."""
    flags = {
        "rotating_refresh_tokens": True,
        "rate_limit": 0,
        "daily_quota": 0,
        "token_rate_limit": 0,
        "activity_delay": 0,
    }
    with running_sandbox(**flags) as running:
        yield running


def oauth_for(sandbox: RunningSandbox) -> OAuthClient:
    return OAuthClient(
        sandbox.auth_base,
        sandbox.client_id,
        sandbox.client_secret,
        pacer=Pacer(100),
        backoff_base=0.05,
    )


def connections(
    sandbox: RunningSandbox, store: SecretStore, home: Path, **options: Any
) -> Connections:
    return Connections(store, FileLocks(home), oauth_for(sandbox), **options)


async def authorize(url: str) -> dict[str, str]:
    """Follow the authorize step by hand; the sandbox redirects at once."""
    async with aiohttp.ClientSession() as session, session.get(url, allow_redirects=False) as got:
        assert got.status == 302
        location = got.headers["Location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def connect(conns: Connections, connection: str = "default") -> TokenBundle:
    url, pending = await conns.start_authorization(connection, REDIRECT)
    params = await authorize(url)
    assert params["state"] == pending.state
    return await conns.complete_authorization(connection, params["state"], params["code"], REDIRECT)


async def age(store: SecretStore, connection: str = "default", left: float = -1.0) -> None:
    """Rewrite the stored bundle so that only ``left`` seconds of a 24 h life remain."""
    raw = await store.get(tokens_secret(connection))
    assert raw is not None
    bundle = TokenBundle.from_json(raw)
    now = time.time()
    aged = TokenBundle(
        bundle.access_token, bundle.refresh_token, now + left, bundle.scope, now + left - 86_400
    )
    await store.set(tokens_secret(connection), aged.to_json())


def token_calls(sandbox: RunningSandbox) -> int:
    return sum(sandbox.requests(TOKEN_KEY).values())


def kv_store(keyvault: KeyVaultFake) -> KeyVaultSecretStore:
    return KeyVaultSecretStore(
        keyvault.url,
        keyvault.credential(),
        verify_challenge_resource=False,
        connection_verify=str(keyvault.ca_path),
        retry_total=0,
    )


# --- PKCE and connecting --------------------------------------------------------------------


def test_pkce_challenge_is_rfc_7636_s256() -> None:
    # RFC 7636 Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


async def test_connect_stores_one_bundle_and_its_state_is_single_use(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    store = LocalFileSecretStore(tmp_path)
    conns = connections(sandbox, store, tmp_path)
    url, pending = await conns.start_authorization("acme", REDIRECT)
    query = parse_qs(urlsplit(url).query)
    assert query["scope"] == ["contact_data account_read offline_access"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"] == [code_challenge(pending.code_verifier)]
    assert query["state"] == [pending.state]
    params = await authorize(url)
    bundle = await conns.complete_authorization("acme", params["state"], params["code"], REDIRECT)
    assert bundle.refresh_token
    assert bundle.scope == "contact_data account_read offline_access"
    assert await store.names() == ["ctct-pending-acme", tokens_secret("acme")]
    stored = await store.get(tokens_secret("acme"))
    assert stored is not None
    assert TokenBundle.from_json(stored) == bundle
    with pytest.raises(AuthorizationError, match="no authorization is pending"):
        await conns.complete_authorization("acme", params["state"], params["code"], REDIRECT)
    # The stored token works against the API.
    manager = conns.tokens("acme")
    async with ConstantContactClient(
        sandbox.api_base, manager.access_token, Pacer(100), retry=FAST
    ) as client:
        assert await client.check_lists([sandbox.create_list()]) == []
    # Read from the store before the request's slot, then from memory after it: the
    # stored bundle was used, and nothing was refreshed.
    assert (manager.source, manager.refreshes) == ("cache", 0)


async def test_forged_state_is_refused_and_the_real_one_still_completes(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    conns = connections(sandbox, LocalFileSecretStore(tmp_path), tmp_path)
    url, _ = await conns.start_authorization("acme", REDIRECT)
    params = await authorize(url)
    with pytest.raises(AuthorizationError, match="state mismatch"):
        await conns.complete_authorization("acme", params["state"] + "x", params["code"], REDIRECT)
    with pytest.raises(AuthorizationError, match="redirect URI"):
        await conns.complete_authorization(
            "acme", params["state"], params["code"], "http://127.0.0.1:9/other"
        )
    # That attempt had the right state, so it used the authorization up.
    with pytest.raises(AuthorizationError, match="no authorization is pending"):
        await conns.complete_authorization("acme", params["state"], params["code"], REDIRECT)
    bundle = await connect(conns, "acme")
    assert bundle.access_token


async def test_expired_authorization_is_refused(sandbox: RunningSandbox, tmp_path: Path) -> None:
    conns = connections(sandbox, LocalFileSecretStore(tmp_path), tmp_path, pending_ttl=-1.0)
    url, _ = await conns.start_authorization("acme", REDIRECT)
    params = await authorize(url)
    before = token_calls(sandbox)
    with pytest.raises(AuthorizationError, match="expired"):
        await conns.complete_authorization("acme", params["state"], params["code"], REDIRECT)
    assert token_calls(sandbox) == before  # the code was never exchanged
    with pytest.raises(AuthorizationError, match="no authorization is pending"):
        await conns.complete_authorization("never-started", "s", "c", REDIRECT)


async def test_token_requests_send_a_form_body_with_basic_auth() -> None:
    seen: list[tuple[dict[str, str], dict[str, str], str]] = []

    async def token(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        seen.append((dict(request.query), form, request.headers.get("Authorization", "")))
        return web.json_response({"access_token": "at-2", "expires_in": 60, "scope": "s"})

    app = web.Application()
    app.router.add_post("/v1/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        oauth = OAuthClient(f"http://127.0.0.1:{port}/v1", "cid", "csecret", pacer=Pacer(100))
        bundle = await oauth.refresh("rt-1")
    finally:
        await runner.cleanup()
    query, form, authorization = seen[0]
    assert query == {}  # nothing secret in the URL
    assert form == {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    assert authorization == "Basic Y2lkOmNzZWNyZXQ="  # base64("cid:csecret")
    assert bundle.refresh_token == "rt-1"  # no new one given: the old one stays
    assert 59 <= bundle.expires_at - time.time() <= 60


# --- refreshing --------------------------------------------------------------------------------


async def test_refresh_happens_ahead_of_expiry_only(
    rotating: RunningSandbox, tmp_path: Path
) -> None:
    store = LocalFileSecretStore(tmp_path)
    conns = connections(rotating, store, tmp_path, refresh_margin=300.0)
    await connect(conns)
    await age(store, left=1000.0)  # more than the margin left: used as it is
    before = token_calls(rotating)
    manager = conns.tokens("default")
    await manager.access_token()
    assert (manager.source, manager.refreshes) == ("store", 0)
    await age(store, left=200.0)  # valid, but within 5 minutes of expiry
    manager = conns.tokens("default")
    token = await manager.access_token()
    assert (manager.source, manager.refreshes) == ("refresh", 1)
    assert token_calls(rotating) == before + 1
    assert await manager.access_token() == token
    assert manager.source == "cache"


async def test_many_workers_after_expiry_refresh_once_with_rotation(
    rotating: RunningSandbox, tmp_path: Path
) -> None:
    store = LocalFileSecretStore(tmp_path)
    conns = connections(rotating, store, tmp_path)
    await connect(conns)
    await age(store)
    before_tokens, before_invalid = token_calls(rotating), rotating.stats()["invalid_grant"]
    # Separate managers, as separate processes would be: only store and lock are shared.
    managers = [conns.tokens("default") for _ in range(8)]
    tokens = await asyncio.gather(*(m.access_token() for m in managers))
    assert len(set(tokens)) == 1
    assert sum(m.refreshes for m in managers) == 1
    assert sorted(m.source for m in managers) == ["refresh"] + ["store"] * 7
    assert token_calls(rotating) == before_tokens + 1
    assert rotating.stats()["invalid_grant"] == before_invalid


async def test_concurrent_401s_force_a_single_refresh(
    rotating: RunningSandbox, tmp_path: Path
) -> None:
    store = LocalFileSecretStore(tmp_path)
    conns = connections(rotating, store, tmp_path)
    first = (await connect(conns)).access_token
    manager = conns.tokens("default")
    assert await manager.access_token() == first
    before = token_calls(rotating)
    forced = await asyncio.gather(*(manager.access_token(force_refresh=True) for _ in range(5)))
    assert len(set(forced)) == 1
    assert forced[0] != first
    assert manager.refreshes == 1
    assert token_calls(rotating) == before + 1


async def test_a_spent_refresh_token_needs_reconnecting_and_says_so(
    rotating: RunningSandbox, tmp_path: Path
) -> None:
    store = LocalFileSecretStore(tmp_path)
    conns = connections(rotating, store, tmp_path)
    await connect(conns)
    stale = await store.get(tokens_secret("default"))
    assert stale is not None
    await age(store)
    await conns.tokens("default").access_token()  # rotates: the stale copy is now dead
    with pytest.raises(InvalidGrant):
        await conns.oauth.refresh(str(TokenBundle.from_json(stale).refresh_token))
    invalid_before = rotating.stats()["invalid_grant"]
    await store.set(tokens_secret("default"), stale)  # e.g. a restored backup
    await age(store)
    with pytest.raises(ReauthorizationRequired, match="invalid_grant") as caught:
        await conns.tokens("default").access_token()
    assert "connection 'default' needs to be reconnected" in str(caught.value)
    assert rotating.stats()["invalid_grant"] == invalid_before + 1
    assert await read_status(store, "default") is not None
    # Marked: the next worker says so without spending anything at the token endpoint.
    before = token_calls(rotating)
    with pytest.raises(ReauthorizationRequired, match="invalid_grant"):
        await conns.tokens("default").access_token()
    assert token_calls(rotating) == before
    # Connecting again clears the mark.
    await connect(conns)
    assert await read_status(store, "default") is None
    await age(store)
    assert await conns.tokens("default").access_token()


async def test_not_connected_is_a_clear_error(sandbox: RunningSandbox, tmp_path: Path) -> None:
    conns = connections(sandbox, LocalFileSecretStore(tmp_path), tmp_path)
    with pytest.raises(ReauthorizationRequired, match="no tokens are stored"):
        await conns.tokens("nobody").access_token()


# --- Key Vault --------------------------------------------------------------------------------


async def test_token_bundle_round_trips_through_key_vault(
    rotating: RunningSandbox, keyvault: KeyVaultFake, tmp_path: Path
) -> None:
    async with kv_store(keyvault) as store:
        conns = connections(rotating, store, tmp_path)
        bundle = await connect(conns, "acme")
        assert keyvault.version_count(tokens_secret("acme")) == 1
        assert bundle.to_json() in keyvault.stored_values()
        manager = conns.tokens("acme")
        assert await manager.access_token() == bundle.access_token
        assert manager.source == "store"
        await age(store, "acme")
        refreshed = await conns.tokens("acme").access_token()
        assert refreshed != bundle.access_token
        assert keyvault.version_count(tokens_secret("acme")) == 3  # connect, aged, refreshed


async def test_failed_store_after_rotation_marks_the_connection(
    rotating: RunningSandbox, keyvault: KeyVaultFake, tmp_path: Path
) -> None:
    async with kv_store(keyvault) as store:
        conns = connections(rotating, store, tmp_path)
        await connect(conns)
        await age(store)
        keyvault.fail_next(1, 500, method="PUT")  # the write of the rotated bundle
        with pytest.raises(ReauthorizationRequired, match="could not be stored") as caught:
            await conns.tokens("default").access_token()
        assert "HTTP 500" in str(caught.value)
        reason = await read_status(store, "default")
        assert reason is not None
        assert "could not be stored" in reason
        assert keyvault.version_count(status_secret("default")) == 1
        before = token_calls(rotating)
        with pytest.raises(ReauthorizationRequired, match="could not be stored"):
            await conns.tokens("default").access_token()
        assert token_calls(rotating) == before  # never silently retried with a dead token


async def test_failed_store_without_rotation_keeps_working(
    sandbox: RunningSandbox, keyvault: KeyVaultFake, tmp_path: Path
) -> None:
    async with kv_store(keyvault) as store:
        conns = connections(sandbox, store, tmp_path)
        await connect(conns)
        await age(store)
        keyvault.fail_next(1, 500, method="PUT")
        manager = conns.tokens("default")
        assert await manager.access_token()
        assert manager.source == "refresh"
        assert await read_status(store, "default") is None  # the stored refresh token still works


# --- logs ---------------------------------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


async def test_no_token_secret_code_or_email_in_any_log_line(
    rotating: RunningSandbox,
    keyvault: KeyVaultFake,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root: shared.*, aiohttp.*, azure.*, everything
    for name in ("aiohttp", "aiohttp.client", "aiohttp.access", "aiohttp.server", "azure"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    store = kv_store(keyvault)  # tokens through the real Key Vault SDK and its logging
    conns = connections(rotating, store, tmp_path)
    url, pending = await conns.start_authorization("default", REDIRECT)
    params = await authorize(url)
    first = await conns.complete_authorization("default", params["state"], params["code"], REDIRECT)
    await age(store)
    manager = conns.tokens("default")
    errors: list[str] = []
    list_id = rotating.create_list()
    emails = [p["email"] for p in people(3, 0, "secret-people.example")]
    async with ConstantContactClient(
        rotating.api_base, manager.access_token, Pacer(100), retry=FAST
    ) as client:
        body = (
            b'{"import_data":['
            + b",".join(b'{"email":"%s"}' % e.encode() for e in emails)
            + b'],"list_ids":["'
            + list_id.encode()
            + b'"]}'
        )
        activity = await client.import_json(body)
        await client.wait_for(activity.activity_id, poll_interval=0.05)
        rotating.faults(http_503={"rate": 1, "count": 1})
        assert await client.contact_by_email(emails[0]) is not None
        await manager.access_token(force_refresh=True)
        try:
            await client.create_list("")
        except RemoteError as exc:
            errors.append(str(exc))
    stale = first.refresh_token
    assert stale is not None
    try:
        await conns.oauth.refresh(stale)
    except InvalidGrant as exc:
        errors.append(str(exc))
    current = await store.get(tokens_secret("default"))
    assert current is not None
    latest = TokenBundle.from_json(current)
    await store.close()

    assert len(errors) == 2
    forbidden = [
        first.access_token, stale, latest.access_token, str(latest.refresh_token),
        rotating.client_secret, params["code"], pending.code_verifier, pending.state, *emails,
    ]  # fmt: skip
    texts = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    assert any("POST /token" in t for t in texts), "the token client should have logged"
    assert any(r.name.startswith("azure") for r in caplog.records), "the SDK should have logged"
    assert any("-> 503" in t or "HTTP 503" in t for t in texts)
    for text in texts + errors:
        for value in forbidden:
            assert value not in text


# --- settings -----------------------------------------------------------------------------------


async def test_settings_defaults_validation_and_the_client_secret_in_the_vault(
    keyvault: KeyVaultFake, tmp_path: Path
) -> None:
    plain = Settings.from_mapping({"CTCT_CLIENT_ID": "cid", "CCEXPORT_HOME": str(tmp_path)})
    assert (plain.api_base, plain.auth_base) == (DEFAULT_API_BASE, DEFAULT_AUTH_BASE)
    assert (plain.requests_per_second, plain.home, plain.client_secret) == (4.0, tmp_path, None)
    assert await plain.resolve_client_secret(LocalFileSecretStore(tmp_path)) is None
    with pytest.raises(ConfigError, match="CTCT_CLIENT_ID"):
        Settings.from_mapping({}).require_client_id()
    with pytest.raises(ConfigError, match="CTCT_REQUESTS_PER_SECOND"):
        Settings.from_mapping({"CTCT_REQUESTS_PER_SECOND": "5"})
    with pytest.raises(ConfigError, match="CTCT_API_BASE"):
        Settings.from_mapping({"CTCT_API_BASE": "api.cc.email/v3"})
    secret = "kv-client-secret-value"
    vaulted = Settings.from_mapping({"CTCT_CLIENT_ID": "cid", "KEY_VAULT_URL": keyvault.url})
    assert secret not in repr(Settings.from_mapping({"CTCT_CLIENT_SECRET": secret}))
    async with kv_store(keyvault) as store:
        await store.set("ctct-client-secret", secret)
        assert await vaulted.resolve_client_secret(store) == secret
