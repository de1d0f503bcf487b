"""Sandbox limits: 4 requests/s (throttled), daily quota (quota_exceeded), queued activities."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from sandbox.loop_lag import LoopLag
from tests.support.sandbox_api import api_for, people
from tests.support.sandbox_service import RunningSandbox

Factory = Callable[..., RunningSandbox]
THROTTLED = {"error_key": "throttled", "error_message": "Too Many Requests"}
QUOTA = {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_more_than_four_requests_a_second_are_throttled(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory()  # the real service's defaults: 4/s, 10,000/day
    api = api_for(sandbox, session)
    replies = await asyncio.gather(*(api.get("/contact_lists") for _ in range(10)))
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [200] * 4 + [429] * 6
    assert all(reply.body == THROTTLED for reply in replies if reply.status == 429)
    await asyncio.sleep(1.05)  # a new second, a new allowance
    assert (await api.get("/contact_lists")).status == 200
    stats = sandbox.stats()
    assert stats["throttled"] == 6
    assert stats["requests"]["GET /v3/contact_lists"] == {"200": 5, "429": 6}
    assert stats["daily_used"] == {sandbox.client_id: 5}  # throttled requests use no quota
    # Each throttled request's window: when, and how long before it the four it came
    # after arrived (all within the second, or it would not have been throttled).
    windows = stats["throttled_windows"]
    assert len(windows) == 6
    assert all(len(w["window"]) == 4 and max(w["window"]) < 1.0 for w in windows)
    assert all(abs(w["at"] - time.time()) < 10 for w in windows)
    span = stats["busy_span"][sandbox.client_id]  # from the first let through to the last
    assert 1.0 <= span["last_at"] - span["first_at"] < 5.0
    seconds = stats["per_second"][sandbox.client_id]  # what each second let through
    assert sum(seconds.values()) == 5
    assert max(seconds.values()) <= 4


async def test_daily_quota_is_answered_with_quota_exceeded(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(daily_quota=3, rate_limit=0)
    api = api_for(sandbox, session)
    for _ in range(3):
        assert (await api.get("/contact_lists")).status == 200
    over = await api.get("/contacts")
    assert over.status == 429
    assert over.body == QUOTA
    assert (await api.get("/activities")).body == QUOTA
    assert sandbox.stats()["quota_exceeded"] == 2
    sandbox.reset_usage()  # as at 00:00 UTC
    assert (await api.get("/contact_lists")).status == 200


async def test_the_quota_is_per_api_key_not_per_token(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(daily_quota=2, rate_limit=0)
    first, second = api_for(sandbox, session), api_for(sandbox, session)
    assert first.token != second.token
    assert (await first.get("/contact_lists")).status == 200
    assert (await second.get("/contact_lists")).status == 200
    assert (await first.get("/contact_lists")).body == QUOTA
    assert (await second.get("/contact_lists")).body == QUOTA


async def test_limits_can_change_at_run_time(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(rate_limit=0, daily_quota=0)
    api = api_for(sandbox, session)
    replies = await asyncio.gather(*(api.get("/contact_lists") for _ in range(12)))
    assert {reply.status for reply in replies} == {200}
    settings = sandbox.settings(requests_per_second=2)
    assert settings["requests_per_second"] == 2
    replies = await asyncio.gather(*(api.get("/contact_lists") for _ in range(5)))
    assert sorted(reply.status for reply in replies) == [200, 200, 429, 429, 429]


async def test_at_most_max_queued_activities_wait(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(rate_limit=0, max_queued_activities=2, activity_delay=30)
    list_id = sandbox.create_list()
    api = api_for(sandbox, session)
    body = {"import_data": people(2), "list_ids": [list_id]}
    assert (await api.post("/activities/contacts_json_import", body)).status == 201
    assert (await api.post("/activities/contacts_json_import", body)).status == 201
    full = await api.post("/activities/contacts_json_import", body)
    assert full.status == 429
    assert full.body["error_key"] == "throttled"
    assert "1,000 queued activities" in full.body["error_message"]
    membership = {"source": {"contact_ids": []}, "list_ids": [list_id]}
    assert (await api.post("/activities/add_list_memberships", membership)).status == 429
    assert (await api.get("/activities")).status == 200  # reading is not limited by the queue


async def _slow_import(api_base: str, token: str, session: aiohttp.ClientSession) -> int:
    """One import whose body arrives over 0.4 s, as a 4 MB body on a slow link does."""

    async def body() -> AsyncIterator[bytes]:
        yield b'{"list_ids": [], "import_data": ['
        await asyncio.sleep(0.4)
        yield b'{"email": "slow@example.com"}]}'

    async with session.post(
        f"{api_base}/activities/contacts_json_import",
        data=body(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    ) as response:
        await response.read()
        return response.status


async def test_the_most_requests_in_flight_at_once_are_counted_per_key(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(rate_limit=0)
    token = sandbox.access_token()
    statuses = await asyncio.gather(
        *(_slow_import(sandbox.api_base, token, session) for _ in range(3))
    )
    assert all(status in {201, 400} for status in statuses)  # answered, not throttled
    api = api_for(sandbox, session, token)
    for _ in range(4):  # quick ones one after another: one at a time
        assert (await api.get("/contact_lists")).status == 200
    stats = sandbox.stats()
    assert stats["in_flight_peak"] == {sandbox.client_id: 3}
    assert stats["in_flight"] == {}  # every one answered
    sandbox.control("POST", "stats/reset")
    assert (await api.get("/contact_lists")).status == 200
    assert sandbox.stats()["in_flight_peak"] == {sandbox.client_id: 1}


async def test_throttled_requests_are_not_in_flight(
    sandbox_factory: Factory, session: aiohttp.ClientSession
) -> None:
    sandbox = sandbox_factory(rate_limit=2)
    token = sandbox.access_token()
    statuses = await asyncio.gather(
        *(_slow_import(sandbox.api_base, token, session) for _ in range(5))
    )
    assert sorted(statuses).count(429) == 3  # answered at once, their bodies unread
    stats = sandbox.stats()
    assert stats["throttled"] == 3
    assert stats["in_flight_peak"] == {sandbox.client_id: 2}


async def test_the_loop_lag_watch_sees_a_held_up_loop() -> None:
    """The sandbox's loop, held up 0.12 s (as a long parse or a busy machine would): the
    watch records the stall and its length, which a benchmark reads beside a throttled
    request's window."""
    lag = LoopLag()
    lag.start()
    await asyncio.sleep(0.05)
    time.sleep(0.12)  # the hold-up under test
    await asyncio.sleep(0.05)
    await lag.stop()
    assert lag.worst >= 0.1
    assert any(seconds >= 0.1 for _end, seconds in lag.stalls)
    lag.reset()
    assert (lag.worst, lag.stalls) == (0.0, [])
