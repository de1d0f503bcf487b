"""The sandbox's OAuth2: code + PKCE without a browser, refresh, rotation, expiry, limits."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from sandbox.oauth import s256
from tests.support.sandbox_api import api_for
from tests.support.sandbox_service import RunningSandbox

REDIRECT = "http://127.0.0.1:9/callback"
Factory = Callable[..., RunningSandbox]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def basic(sandbox: RunningSandbox, secret: str | None = None) -> dict[str, str]:
    raw = f"{sandbox.client_id}:{secret if secret is not None else sandbox.client_secret}"
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


async def authorize(
    session: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    verifier: str,
    scope: str = "contact_data offline_access",
) -> dict[str, list[str]]:
    """Run the authorize step; returns the redirect's query parameters."""
    params = {
        "client_id": sandbox.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": scope,
        "state": "xyz-state",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    async with session.get(sandbox.authorize_url, params=params, allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


async def token_request(
    session: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    params: dict[str, str],
    *,
    form: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST the token endpoint, parameters in the query string (as the docs show) or a form."""
    kwargs: dict[str, Any] = {"data": params} if form else {"params": params}
    async with session.post(
        sandbox.token_url, headers=headers or basic(sandbox), **kwargs
    ) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def connect(session: aiohttp.ClientSession, sandbox: RunningSandbox) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    query = await authorize(session, sandbox, verifier)
    status, body = await token_request(
        session,
        sandbox,
        {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
    )
    assert status == 200, body
    return body


async def test_code_flow_with_pkce_completes_without_a_browser(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(token_rate_limit=0)
    verifier = secrets.token_urlsafe(48)
    query = await authorize(session, sandbox, verifier)
    assert query["state"] == ["xyz-state"]
    params = {
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    status, body = await token_request(session, sandbox, params)
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86_400  # the real service's 24 h default
    assert set(body["scope"].split()) == {"contact_data", "offline_access"}
    assert body["refresh_token"]
    assert body["access_token"].count(".") == 2  # JWT-shaped, like the real tokens
    reply = await api_for(sandbox, session, body["access_token"]).get("/contact_lists")
    assert reply.status == 200
    # The code was single-use.
    status, again = await token_request(session, sandbox, params)
    assert (status, again["error"]) == (400, "invalid_grant")


async def test_pkce_verifier_redirect_uri_and_client_secret_are_checked(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(token_rate_limit=0)
    verifier = secrets.token_urlsafe(48)
    code = (await authorize(session, sandbox, verifier))["code"][0]
    wrong = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": "nope",
    }
    status, body = await token_request(session, sandbox, wrong)
    assert (status, body["error"]) == (400, "invalid_grant")
    code = (await authorize(session, sandbox, verifier))["code"][0]
    other_uri = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT + "x",
        "code_verifier": verifier,
    }
    status, body = await token_request(session, sandbox, other_uri)
    assert (status, body["error"]) == (400, "invalid_grant")
    code = (await authorize(session, sandbox, verifier))["code"][0]
    good = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    status, body = await token_request(
        session, sandbox, good, headers=basic(sandbox, "wrong-secret")
    )
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = await token_request(session, sandbox, {"grant_type": "password"})
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    assert sandbox.stats()["invalid_grant"] == 2


async def test_authorize_rejects_unknown_clients_and_plain_pkce(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory()
    params = {
        "client_id": "someone-else",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "contact_data",
    }
    async with session.get(sandbox.authorize_url, params=params, allow_redirects=False) as response:
        assert response.status == 400
    params |= {
        "client_id": sandbox.client_id,
        "code_challenge": "abc",
        "code_challenge_method": "plain",
        "state": "s",
    }
    async with session.get(sandbox.authorize_url, params=params, allow_redirects=False) as response:
        assert response.status == 302
        query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == ["s"]


async def test_long_lived_refresh_token_comes_back_unchanged_and_stays_valid(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(token_rate_limit=0)
    first = await connect(session, sandbox)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    status, second = await token_request(session, sandbox, refresh)
    assert status == 200
    status, third = await token_request(
        session, sandbox, refresh, form=True
    )  # a form body works too
    assert status == 200
    assert first["refresh_token"] == second["refresh_token"] == third["refresh_token"]
    assert len({first["access_token"], second["access_token"], third["access_token"]}) == 3
    assert sandbox.stats()["invalid_grant"] == 0


async def test_rotating_refresh_token_is_single_use(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(token_rate_limit=0, rotating_refresh_tokens=True)
    first = await connect(session, sandbox)
    status, second = await token_request(
        session, sandbox, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    # The used (superseded) token is dead: invalid_grant, as the real service answers.
    status, body = await token_request(
        session, sandbox, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert status == 400
    assert body == {
        "error": "invalid_grant",
        "error_description": "The refresh token is invalid or expired.",
    }
    # The newest one still works, once.
    status, third = await token_request(
        session, sandbox, {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
    )
    assert status == 200
    assert third["refresh_token"] not in {first["refresh_token"], second["refresh_token"]}
    assert sandbox.stats()["invalid_grant"] == 1
    # Access tokens issued earlier stay valid until they expire.
    assert (
        await api_for(sandbox, session, first["access_token"]).get("/contact_lists")
    ).status == 200


async def test_access_token_expires_and_missing_tokens_get_401(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(access_token_ttl=1, token_rate_limit=0)
    tokens = sandbox.tokens()
    assert tokens["expires_in"] == 1
    api = api_for(sandbox, session, tokens["access_token"])
    assert (await api.get("/contact_lists")).status == 200
    await asyncio.sleep(1.2)
    expired = await api.get("/contact_lists")
    assert expired.status == 401
    assert expired.body == {"error_key": "unauthorized", "error_message": "Unauthorized"}
    missing = await api_for(sandbox, session, "").get("/contact_lists")
    assert missing.status == 401
    # A refresh gives a working token again.
    status, body = await token_request(
        session, sandbox, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert status == 200
    assert (
        await api_for(sandbox, session, body["access_token"]).get("/contact_lists")
    ).status == 200


async def test_scopes_decide_refresh_tokens_and_access(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(token_rate_limit=0)
    verifier = secrets.token_urlsafe(48)
    code = (await authorize(session, sandbox, verifier, scope="account_read"))["code"][0]
    status, body = await token_request(
        session,
        sandbox,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
    )
    assert status == 200
    assert "refresh_token" not in body  # no offline_access, no refresh token
    reply = await api_for(sandbox, session, body["access_token"]).get("/contact_lists")
    assert reply.status == 403


async def test_token_endpoint_allows_one_request_per_second(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory()  # the real service's limit: 1 token request per second
    tokens = sandbox.tokens()
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    first, second = await asyncio.gather(
        token_request(session, sandbox, refresh), token_request(session, sandbox, refresh)
    )
    statuses = sorted([first[0], second[0]])
    assert statuses == [200, 429]
    limited = first[1] if first[0] == 429 else second[1]
    assert limited == {"error_key": "throttled", "error_message": "Too Many Requests"}
    await asyncio.sleep(1.05)
    status, _ = await token_request(session, sandbox, refresh)
    assert status == 200
    assert sandbox.requests("POST /oauth2/default/v1/token") == {"200": 2, "429": 1}
