"""Sandbox faults, set at run time (``/__sandbox/faults``) or by flags: each one fires as told."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

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


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_fire_as_often_as_told(
    sandbox_factory: Factory, session: aiohttp.ClientSession, status: int
) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    api = api_for(sandbox, session)
    sandbox.faults(**{f"http_{status}": {"rate": 1, "count": 2}})
    first, second, third = [await api.get("/contact_lists") for _ in range(3)]
    assert (first.status, second.status, third.status) == (status, status, 200)
    assert isinstance(first.body, list)
    assert set(first.body[0]) == {"error_key", "error_message"}
    stats = sandbox.stats()
    assert stats["faults"][f"http_{status}"] == 2
    assert stats["requests"]["GET /v3/contact_lists"] == {str(status): 2, "200": 1}


async def test_connection_reset_before_and_after_the_work(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    api = api_for(sandbox, session)
    list_id = sandbox.create_list()
    # aiohttp retries an idempotent request once after a reset: two resets surface.
    sandbox.faults(reset={"rate": 1, "count": 2})
    with pytest.raises(aiohttp.ClientError):
        await api.get("/contact_lists")
    assert (await api.get("/contact_lists")).status == 200
    # A reset after the work: the import happened although the client never heard so.
    sandbox.faults(reset={"rate": 1, "count": 1, "after": True})
    with pytest.raises(aiohttp.ClientError):
        await api.post(
            "/activities/contacts_json_import", {"import_data": people(3), "list_ids": [list_id]}
        )
    listing = (await api.get("/activities")).body["activities"]
    assert len(listing) == 1
    await api.wait_activity(listing[0]["activity_id"])
    assert len(sandbox.members(list_id)) == 3
    assert sandbox.stats()["faults"]["reset"] == 3


async def test_added_latency(sandbox_factory: Factory, session: aiohttp.ClientSession) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    api = api_for(sandbox, session)
    sandbox.faults(latency={"rate": 1, "seconds": 0.4, "count": 1})
    started = time.monotonic()
    assert (await api.get("/contact_lists")).status == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert (await api.get("/contact_lists")).status == 200
    assert time.monotonic() - started < 0.4


@pytest.mark.parametrize(
    ("fault", "state"), [("import_failed", "failed"), ("import_timed_out", "timed_out")]
)
async def test_imports_that_end_failed_or_timed_out(
    sandbox_factory: Factory, session: aiohttp.ClientSession, fault: str, state: str
) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    api = api_for(sandbox, session)
    list_id = sandbox.create_list()
    sandbox.faults(**{fault: {"rate": 1, "count": 1}})
    broken = await api.import_json([list_id], people(50))
    assert broken["state"] == state
    assert broken["activity_errors"]
    assert sandbox.members(list_id) == []  # nothing of a failed import is applied
    assert (await api.get(f"/activities?state={state}")).body["activities"][0][
        "activity_id"
    ] == broken["activity_id"]
    fine = await api.import_json([list_id], people(50))
    assert fine["state"] == "completed"
    assert len(sandbox.members(list_id)) == 50


async def test_token_endpoint_errors(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    refresh = sandbox.tokens()["refresh_token"]
    auth = {"Authorization": aiohttp.encode_basic_auth(sandbox.client_id, sandbox.client_secret)}
    params = {"grant_type": "refresh_token", "refresh_token": refresh}
    sandbox.faults(token_error={"rate": 1, "count": 1, "status": 503})
    async with session.post(sandbox.token_url, params=params, headers=auth) as response:
        assert response.status == 503
        assert (await response.json())["error"] == "temporarily_unavailable"
    async with session.post(sandbox.token_url, params=params, headers=auth) as response:
        assert response.status == 200


async def test_faults_from_flags_and_clearing(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(fault_503_rate=1, **UNLIMITED)
    api = api_for(sandbox, session)
    assert (await api.get("/contact_lists")).status == 503
    assert sandbox.stats()["contacts"] == 0  # the test controls never see faults
    snapshot = sandbox.faults(clear=True)
    assert snapshot["settings"]["http_503"]["rate"] == 0
    assert (await api.get("/contact_lists")).status == 200


async def test_fault_rates_are_probabilities(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(seed=7, **UNLIMITED)
    api = api_for(sandbox, session)
    sandbox.faults(http_500=0.5)
    statuses = [(await api.get("/contact_lists")).status for _ in range(60)]
    assert 10 < statuses.count(500) < 50
    assert statuses.count(200) == 60 - statuses.count(500)


def test_bad_fault_settings_are_refused(sandbox_factory: Factory) -> None:
    sandbox = sandbox_factory()
    for bad in (
        {"meteor": 1},
        {"http_500": 2},
        {"http_500": {"rate": 1, "count": -1}},
        {"reset": {"after": "yes"}},
    ):
        with pytest.raises(ServiceError, match="400"):
            sandbox.faults(**bad)
