"""The sandbox counts what each authorization's requests met (``/__sandbox/authorization``),
aims faults at one authorization, and makes a fault certain within its first chances
(``by``): what the chaos suite proves its faults reached its own runs with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.support.sandbox_api import api_for, people
from tests.support.sandbox_service import RunningSandbox
from tests.support.services import ServiceError

Factory = Callable[..., RunningSandbox]
UNLIMITED = {"rate_limit": 0, "daily_quota": 0, "token_rate_limit": 0, "activity_delay": 0}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def seen(sandbox: RunningSandbox, token: str) -> dict[str, Any]:
    found: dict[str, Any] = sandbox.control("GET", f"authorization?token={quote(token, safe='')}")
    return found


async def refresh(
    sandbox: RunningSandbox, session: aiohttp.ClientSession, refresh_token: str
) -> tuple[int, dict[str, Any]]:
    """A refresh as the product sends it: Basic client auth, a form body."""
    auth = {"Authorization": aiohttp.encode_basic_auth(sandbox.client_id, sandbox.client_secret)}
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    async with session.post(sandbox.token_url, data=form, headers=auth) as response:
        return response.status, await response.json()


async def test_each_authorization_counts_apart_and_faults_aim_at_one(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    mine, theirs = sandbox.tokens(), sandbox.tokens()
    me = seen(sandbox, mine["refresh_token"])
    assert seen(sandbox, mine["access_token"])["authorization"] == me["authorization"]
    assert seen(sandbox, theirs["access_token"])["authorization"] != me["authorization"]
    sandbox.faults(http_503={"rate": 1, "count": 2, "authorization": me["authorization"]})
    api, other = (
        api_for(sandbox, session, mine["access_token"]),
        api_for(sandbox, session, theirs["access_token"]),
    )
    assert (await other.get("/contact_lists")).status == 200  # not aimed at: no chance
    assert [(await api.get("/contact_lists")).status for _ in range(3)] == [503, 503, 200]
    # A refresh (a form body, as the product sends it) stays the same authorization.
    sandbox.faults(token_error={"rate": 1, "count": 1, "authorization": me["authorization"]})
    assert (await refresh(sandbox, session, theirs["refresh_token"]))[0] == 200
    assert (await refresh(sandbox, session, mine["refresh_token"]))[0] == 503
    status, fresh = await refresh(sandbox, session, mine["refresh_token"])
    assert status == 200
    assert (
        await api_for(sandbox, session, fresh["access_token"]).get("/contact_lists")
    ).status == 200
    after = seen(sandbox, fresh["access_token"])
    assert after["authorization"] == me["authorization"]
    assert after["requests"] == {
        "GET /v3/contact_lists": {"503": 2, "200": 2},
        "POST /oauth2/default/v1/token": {"503": 1, "200": 1},
    }
    assert (after["faults"]["http_503"], after["faults"]["token_error"]) == (2, 1)
    assert seen(sandbox, theirs["access_token"])["requests"] == {
        "GET /v3/contact_lists": {"200": 1},
        "POST /oauth2/default/v1/token": {"200": 1},
    }
    assert sandbox.stats()["faults"]["http_503"] == 2
    # Each authorization's span: its first request to its last, as they arrived.
    theirs_seen = seen(sandbox, theirs["access_token"])
    assert 0 < theirs_seen["first_at"] < after["first_at"] <= after["last_at"]
    assert theirs_seen["last_at"] < after["last_at"]  # their refresh came before my last
    with pytest.raises(ServiceError, match="404"):
        seen(sandbox, "no-such-token")


async def test_resets_imports_and_throttling_are_counted_for_their_authorization(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(**{**UNLIMITED, "rate_limit": 1})
    token = sandbox.access_token()
    me = seen(sandbox, token)["authorization"]
    api = api_for(sandbox, session, token)
    list_id = sandbox.create_list()
    sandbox.faults(
        reset={"rate": 1, "count": 1, "after": True, "authorization": me},
        import_failed={"rate": 1, "count": 1, "authorization": me},
    )
    with pytest.raises(aiohttp.ClientError):  # carried out, its answer lost
        await api.post(
            "/activities/contacts_json_import", {"import_data": people(3), "list_ids": [list_id]}
        )
    statuses = [(await api.get("/contact_lists")).status for _ in range(6)]
    assert statuses.count(429) >= 1  # 1 request/s: six in a row cannot all pass
    found = seen(sandbox, token)
    assert found["requests"]["POST /v3/activities/contacts_json_import"] == {"reset": 1}
    assert (found["faults"]["reset"], found["faults"]["import_failed"]) == (1, 1)
    assert found["throttled"] == statuses.count(429)
    assert found["requests"]["GET /v3/contact_lists"] == {
        str(status): statuses.count(status) for status in set(statuses)
    }
    assert len(sandbox.imports(list_id)) == 1  # the import whose answer was lost went


async def test_by_makes_a_fault_certain_within_its_first_chances(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(seed=3, **UNLIMITED)
    api = api_for(sandbox, session)
    sandbox.faults(http_500={"rate": 0, "by": 3})  # only the third, then never
    assert [(await api.get("/contact_lists")).status for _ in range(6)] == [200, 200, 500] + [
        200
    ] * 3
    for seed in range(5):  # whatever the dice say: one of the first two at the latest
        sandbox.faults(http_503={"rate": 0.01, "by": 2})
        first_two = [(await api.get("/contact_lists")).status for _ in range(2)]
        assert 503 in first_two, (seed, first_two)
    sandbox.faults(clear=True)
    for bad in (
        {"http_500": {"rate": 0, "by": 0}},
        {"http_500": {"by": True}},
        {"http_500": {"by": 1.5}},
        {"http_500": {"rate": 1, "authorization": ""}},
        {"http_500": {"rate": 1, "authorization": 7}},
    ):
        with pytest.raises(ServiceError, match="400"):
            sandbox.faults(**bad)
