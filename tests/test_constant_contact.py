"""The Constant Contact client against the sandbox over real HTTP: every call it offers,
and each error class the issue names (throttled, quota, 5xx, resets, 401, other 4xx)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.pacing import QUOTA_MESSAGE, Pacer, process_pacer
from shared.constant_contact.transport import RetryPolicy, api_messages, error_key
from shared.errors import InputError, QuotaExhausted, RemoteError, ThrottledGiveUp
from shared.wiring import clients
from tests.support.ctct_support import FAST, SandboxTokens
from tests.support.sandbox_api import people
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.services import ROOT

Factory = Callable[..., RunningSandbox]
UNLIMITED = {"rate_limit": 0, "daily_quota": 0, "token_rate_limit": 0, "activity_delay": 0}


def body(list_ids: list[str], contacts: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"import_data": contacts, "list_ids": list_ids})


@pytest.fixture
async def client(sandbox: RunningSandbox) -> AsyncIterator[ConstantContactClient]:
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(200), retry=FAST
    ) as made:
        yield made


def count(stats: dict[str, Any], key: str, status: str | None = None) -> int:
    codes = stats["requests"].get(key, {})
    return sum(codes.values()) if status is None else int(codes.get(status, 0))


# --- the calls ------------------------------------------------------------------------


async def test_json_import_polls_pages_and_finds_contacts(
    sandbox: RunningSandbox, client: ConstantContactClient
) -> None:
    list_id = sandbox.create_list()
    domain = f"{list_id[:8]}.example.com"
    started = [
        await client.import_json(body([list_id], people(600, 0, domain))),
        await client.import_json(body([list_id], people(600, 600, domain))),
    ]
    ids = [a.activity_id for a in started]
    before = sandbox.stats()
    deadline = time.monotonic() + 20
    while True:
        polled = await client.poll_imports(ids)
        if all(a.done for a in polled.values()):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    after = sandbox.stats()
    # Every poll round is one listing request, never one GET per activity.
    rounds = count(after, "GET /v3/activities") - count(before, "GET /v3/activities")
    assert rounds >= 1
    assert count(after, "GET /v3/activities/{activity_id}") == count(
        before, "GET /v3/activities/{activity_id}"
    )
    assert [a.state for a in polled.values()] == ["completed", "completed"]
    assert sum(a.status.person_count for a in polled.values()) == 1200

    members = [c async for c in client.contacts_by_list(list_id)]
    assert len(members) == 1200  # three pages of 500, 500, 200 through the next links
    assert len({c.contact_id for c in members}) == 1200
    assert {c.email for c in members} == {p["email"] for p in people(1200, 0, domain)}
    found = await client.contact_by_email(f"person7@{domain}")
    assert found is not None
    assert found.contact_id in {c.contact_id for c in members}
    assert await client.contact_by_email(f"nobody@{domain}") is None


async def test_poll_falls_back_to_single_gets_only_for_ids_not_listed(
    sandbox: RunningSandbox, client: ConstantContactClient
) -> None:
    list_id = sandbox.create_list()
    activity = await client.import_json(body([list_id], people(3, 0, f"{list_id[:8]}.example")))
    single = await client.poll_imports([activity.activity_id])
    assert list(single) == [activity.activity_id]
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(RemoteError) as caught:
        await client.poll_imports([activity.activity_id, unknown])
    assert caught.value.status == 404
    assert str(caught.value) == (
        "GET /activities/{activity_id}: Constant Contact refused the request (404): "
        "Resource not found for the activity_id provided."
    )


async def test_csv_import_is_multipart_without_our_own_content_type(
    sandbox: RunningSandbox, client: ConstantContactClient
) -> None:
    list_id = sandbox.create_list()
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["email", "first_name"])
    writer.writerows([[f"csv{i}@{list_id[:8]}.example.com", f"F{i}"] for i in range(25)])
    started = await client.import_csv(text.getvalue().encode(), [list_id])
    done = await client.wait_for(started.activity_id, poll_interval=0.05, timeout=20)
    assert done.state == "completed"
    assert done.status.person_count == 25
    assert len(sandbox.members(list_id)) == 25


async def test_lists_create_get_check_and_page(
    sandbox: RunningSandbox, client: ConstantContactClient
) -> None:
    made = await client.create_list(f"client-{time.time_ns()}")
    assert (await client.get_list(made.list_id)).name == made.name
    everything = await client.lists()
    assert made.list_id in {lst.list_id for lst in everything}
    missing = "00000000-0000-4000-8000-00000000abcd"
    assert await client.check_lists([made.list_id]) == []
    assert await client.check_lists([missing]) == [missing]
    assert await client.check_lists([made.list_id, missing]) == [missing]
    with pytest.raises(RemoteError) as caught:
        await client.get_list(missing)
    assert caught.value.status == 404
    assert "was not found" in str(caught.value)  # the API's own message


async def test_lists_with_counts_and_create_or_find_by_name(
    sandbox: RunningSandbox, client: ConstantContactClient
) -> None:
    name = f"by-name-{time.time_ns()}"
    made, created = await client.create_or_find_list(name)
    assert (made.name, created) == (name, True)
    found, created = await client.create_or_find_list(name)
    assert (found.list_id, found.name, created) == (made.list_id, name, False)
    assert found.membership_count == 0
    counted = {lst.list_id: lst for lst in await client.lists(membership_count=True)}
    assert counted[made.list_id].membership_count == 0
    assert {lst.membership_count for lst in await client.lists()} == {None}


async def test_custom_fields_listed_and_created(sandbox_factory: Factory) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(200), retry=FAST
    ) as client:
        assert await client.custom_fields() == []
        made = await client.create_custom_field("Favourite colour")
        assert (made.name, made.label, made.type) == (
            "Favourite_colour",
            "Favourite colour",
            "string",
        )
        dated = await client.create_custom_field("renewal", field_type="date")
        assert [f.name for f in await client.custom_fields()] == ["Favourite_colour", "renewal"]
        assert dated.type == "date"
        with pytest.raises(RemoteError) as taken:
            await client.create_custom_field("renewal")
        assert taken.value.status == 409
        assert "Constant Contact refused the request (409)" in str(taken.value)
        assert "renewal" in str(taken.value)  # the API's own message names the field


async def test_memberships_are_batched_by_500_and_exports_download_the_csv(
    sandbox: RunningSandbox, client: ConstantContactClient
) -> None:
    source, target = sandbox.create_list(), sandbox.create_list()
    domain = f"{source[:8]}.example.com"
    started = await client.import_json(body([source], people(700, 0, domain)))
    await client.wait_for(started.activity_id, poll_interval=0.05, timeout=20)
    ids = [c.contact_id async for c in client.contacts_by_list(source)]
    assert len(ids) == 700

    added = await client.add_list_memberships(ids, [target])
    assert len(added) == 2  # 500 + 200
    for activity in added:
        assert (await client.wait_for(activity.activity_id, poll_interval=0.05)).done
    assert len(sandbox.members(target)) == 700

    exported = await client.export_contacts([target], poll_interval=0.05, timeout=20)
    rows = list(csv.DictReader(io.StringIO(exported.decode("utf-8-sig"))))
    assert len(rows) == 700
    assert {r["email_address"] for r in rows} == {p["email"] for p in people(700, 0, domain)}

    removed = await client.remove_list_memberships(ids, [target])
    assert len(removed) == 2
    for activity in removed:
        await client.wait_for(activity.activity_id, poll_interval=0.05)
    assert sandbox.members(target) == []
    with pytest.raises(InputError, match=r"^at most 50 list ids per request$"):
        await client.add_list_memberships(ids, [target] * 51)


# --- errors ------------------------------------------------------------------------------


async def test_400_carries_the_api_message(client: ConstantContactClient) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.create_list("")
    assert caught.value.status == 400
    assert "name is required" in str(caught.value)
    with pytest.raises(RemoteError, match="not valid JSON"):
        await client.import_json(b"{not json")


def test_error_bodies_in_both_shapes_and_emails_scrubbed() -> None:
    array = b'[{"error_key":"contacts.api.conflict","error_message":"a@b.example exists"}]'
    assert api_messages(array) == "<email> exists"
    assert error_key(array) == "contacts.api.conflict"
    single = b'{"error_key":"quota_exceeded","error_message":"Limit Exceeded"}'
    assert (api_messages(single), error_key(single)) == ("Limit Exceeded", "quota_exceeded")
    assert api_messages(b"<html>oops</html>") == "a non-JSON error body"


async def test_5xx_is_retried_then_succeeds(sandbox_factory: Factory) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    list_id = sandbox.create_list()
    sandbox.faults(http_503={"rate": 1, "count": 2}, http_500={"rate": 1, "count": 1})
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(200), retry=FAST
    ) as client:
        assert (await client.get_list(list_id)).list_id == list_id
        assert client.stats.retries == 3
    assert sandbox.requests("GET /v3/contact_lists/{list_id}") == {"503": 2, "500": 1, "200": 1}


async def test_5xx_gives_up_after_the_bounded_attempts(sandbox_factory: Factory) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    list_id = sandbox.create_list()
    sandbox.faults(http_503={"rate": 1})
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(200), retry=FAST
    ) as client:
        with pytest.raises(RemoteError, match=r"503.*gave up after 4 attempts") as caught:
            await client.get_list(list_id)
    assert caught.value.status == 503
    assert sandbox.requests("GET /v3/contact_lists/{list_id}") == {"503": 4}


async def test_connection_resets_are_retried_and_import_resends_counted(
    sandbox_factory: Factory,
) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    list_id = sandbox.create_list()
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(200), retry=FAST
    ) as client:
        sandbox.faults(reset={"rate": 1, "count": 2})
        assert (await client.get_list(list_id)).list_id == list_id
        # aiohttp itself resends an idempotent request once when a connection drops
        # (RFC 9112 §9.3.1), so two resets may cost one retry of ours or two.
        assert 1 <= client.stats.retries <= 2
        assert client.stats.import_resends == 0
        # Reset after the import was accepted: the resend creates a second activity.
        sandbox.faults(reset={"rate": 1, "count": 1, "after": True})
        started = await client.import_json(body([list_id], people(10, 0, "reset.example")))
        assert client.stats.import_resends == 1
        await client.wait_for(started.activity_id, poll_interval=0.05)
        sandbox.faults(reset={"rate": 1, "count": None, "after": False})
        with pytest.raises(RemoteError, match=r"connection error .*gave up after 4 attempts"):
            await client.get_list(list_id)
    assert sandbox.stats()["activities"].get("completed", 0) == 2
    assert len(sandbox.members(list_id)) == 10  # idempotent per email


async def test_a_slow_answer_times_out_and_is_retried(sandbox_factory: Factory) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    list_id = sandbox.create_list()
    sandbox.faults(latency={"rate": 1, "count": 1, "seconds": 2})
    policy = RetryPolicy(attempts=3, backoff_base=0.01, backoff_cap=0.02, request_timeout=0.5)
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(200), retry=policy
    ) as client:
        assert (await client.get_list(list_id)).list_id == list_id
        assert client.stats.retries == 1


async def test_401_refreshes_once_then_succeeds(sandbox: RunningSandbox) -> None:
    tokens = SandboxTokens(sandbox, bogus=1)
    list_id = sandbox.create_list()
    async with ConstantContactClient(sandbox.api_base, tokens, Pacer(200), retry=FAST) as client:
        assert (await client.get_list(list_id)).list_id == list_id
        assert tokens.forced == 1
        assert client.stats.token_refreshes == 1
    never = SandboxTokens(sandbox, bogus=5)
    async with ConstantContactClient(sandbox.api_base, never, Pacer(200), retry=FAST) as client:
        with pytest.raises(RemoteError, match="even after a refresh") as caught:
            await client.get_list(list_id)
    assert caught.value.status == 401
    assert never.forced == 1  # one refresh, not a loop


async def test_throttled_requests_back_off_and_all_succeed(sandbox_factory: Factory) -> None:
    sandbox = sandbox_factory(rate_limit=3, daily_quota=0, token_rate_limit=0)
    list_id = sandbox.create_list()
    policy = RetryPolicy(throttled_attempts=12, backoff_base=0.1, backoff_cap=1.0)
    # A pacer far above the server's limit, as when other processes share the key.
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(100), retry=policy
    ) as client:
        got = await asyncio.gather(*(client.get_list(list_id) for _ in range(7)))
        assert [g.list_id for g in got] == [list_id] * 7
        assert client.stats.throttled > 0
    assert sandbox.stats()["throttled"] == client.stats.throttled


async def test_throttled_gives_up_with_a_clear_error(sandbox_factory: Factory) -> None:
    # One queued activity at most, held for a while: every further import is 429 throttled.
    sandbox = sandbox_factory(**{**UNLIMITED, "max_queued_activities": 1, "activity_delay": 30})
    list_id = sandbox.create_list()
    policy = RetryPolicy(attempts=3, throttled_attempts=3, backoff_base=0.01, backoff_cap=0.02)
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(200), retry=policy
    ) as client:
        await client.import_json(body([list_id], people(1, 0, "q.example")))
        with pytest.raises(ThrottledGiveUp, match=r"1,000 queued activities.*after 3 attempts"):
            await client.import_json(body([list_id], people(1, 1, "q.example")))
    assert sandbox.requests("POST /v3/activities/contacts_json_import") == {"201": 1, "429": 3}


async def test_quota_exceeded_stops_every_caller_without_a_retry_storm(
    sandbox_factory: Factory,
) -> None:
    sandbox = sandbox_factory(rate_limit=0, daily_quota=5, token_rate_limit=0)
    list_id = sandbox.create_list()
    callers = 20
    pacer = Pacer(100)
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), pacer, retry=FAST
    ) as client:
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.get_list(list_id) for _ in range(callers)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        # Another client sharing the pacer (the same API key) fails without sending.
        async with ConstantContactClient(
            sandbox.api_base, SandboxTokens(sandbox), pacer, retry=FAST
        ) as other:
            with pytest.raises(QuotaExhausted):
                await other.get_list(list_id)
            assert other.stats.requests == 0
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, QuotaExhausted)]
    assert len(ok) == 5
    assert len(failed) == callers - 5
    stats = sandbox.stats()
    sent = count(stats, "GET /v3/contact_lists/{list_id}")
    # Requests sent after the first quota 429: at most those already in flight.
    assert stats["quota_exceeded"] >= 1
    assert sent - 5 == stats["quota_exceeded"] <= callers
    assert sent - 5 < callers / 2  # the one that learnt it and the few already in flight
    assert elapsed < 2
    error = failed[0]
    assert str(error) == QUOTA_MESSAGE
    midnight = (datetime.now(UTC) + timedelta(days=1)).date()
    assert error.resets_at == f"{midnight.isoformat()}T00:00:00Z"


async def test_quota_stop_ends_at_utc_midnight() -> None:
    wall = [datetime(2026, 3, 1, 23, 59, tzinfo=UTC).timestamp()]
    pacer = Pacer(1000, wall_clock=lambda: wall[0])
    error = pacer.stop_for_the_day()
    assert error.resets_at == "2026-03-02T00:00:00Z"
    with pytest.raises(QuotaExhausted):
        await pacer.wait()
    wall[0] += 61
    await pacer.wait()  # a new UTC day


# --- pacing ----------------------------------------------------------------------------------


async def test_pacing_spaces_requests_across_concurrent_tasks(sandbox: RunningSandbox) -> None:
    list_id = sandbox.create_list()
    tokens = SandboxTokens(sandbox)
    await tokens()  # minted before the clock starts
    async with ConstantContactClient(sandbox.api_base, tokens, Pacer(4), retry=FAST) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.get_list(list_id) for _ in range(9)))
        elapsed = time.monotonic() - started
    # N requests at 4/s: the last one starts (N-1)/4 s after the first.
    assert 8 / 4 <= elapsed < 8 / 4 + 1.0


async def test_two_clients_sharing_a_pacer_share_its_rate(sandbox: RunningSandbox) -> None:
    list_id = sandbox.create_list()
    one_tokens, two_tokens = SandboxTokens(sandbox), SandboxTokens(sandbox)
    await asyncio.gather(one_tokens(), two_tokens())
    pacer = Pacer(20)
    async with (
        ConstantContactClient(sandbox.api_base, one_tokens, pacer) as one,
        ConstantContactClient(sandbox.api_base, two_tokens, pacer) as two,
    ):
        started = time.monotonic()
        await asyncio.gather(
            *(one.get_list(list_id) for _ in range(5)), *(two.get_list(list_id) for _ in range(5))
        )
        elapsed = time.monotonic() - started
    assert elapsed >= 9 / 20  # ten requests at 20/s between them, not 20/s each


async def test_a_state_file_shares_the_rate_and_the_quota_stop_between_pacers(
    tmp_path: Path,
) -> None:
    # Two pacers on one file stand for two processes under one CCEXPORT_HOME.
    one, two = (Pacer(20, state_file=tmp_path / "pace.json") for _ in range(2))
    started = time.monotonic()
    await asyncio.gather(*(p.wait() for p in (one, two) for _ in range(5)))
    assert time.monotonic() - started >= 9 / 20
    error = one.stop_for_the_day()
    with pytest.raises(QuotaExhausted) as caught:
        await two.wait()
    assert caught.value.resets_at == error.resets_at


def test_one_process_pacer_per_api_key() -> None:
    assert process_pacer("key-a") is process_pacer("key-a")
    assert process_pacer("key-a") is not process_pacer("key-b")
    assert process_pacer("key-a").rate == 4.0


# --- the production defaults, pinned ------------------------------------------------------------

LIMIT = 4.0  # Constant Contact: 4 requests per second per API key
MARGIN = 0.9  # README, "Limits and retries": runs pace themselves at 90 % of the limit


async def test_runs_pace_under_the_limit_by_the_documented_margin(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    # The sandbox keeps the real limit (4/s per key); a key of its own gets a fresh pacer.
    sandbox = sandbox_factory(
        daily_quota=0, token_rate_limit=0, client_id=f"pace-{uuid.uuid4().hex[:8]}"
    )
    assert sandbox.settings()["requests_per_second"] == LIMIT
    list_id = sandbox.create_list()
    # The pacer a run gets, built as the function app and `ccexport run` build it.
    services = clients.run_services_from(cli_env(sandbox, tmp_path / "home"))
    pacer = services.pacer
    assert pacer.rate == pytest.approx(LIMIT * MARGIN)
    tokens = SandboxTokens(sandbox)
    await tokens()  # minted before the clock starts
    burst = 17
    async with ConstantContactClient(
        sandbox.api_base, tokens, pacer, retry=services.retry
    ) as client:
        started = time.monotonic()
        got = await asyncio.gather(*(client.get_list(list_id) for _ in range(burst)))
        elapsed = time.monotonic() - started
        assert client.stats.throttled == 0
    assert [g.list_id for g in got] == [list_id] * burst
    # Not one request refused as too fast: the margin absorbs arrival bunching.
    assert sandbox.stats()["throttled"] == 0
    assert sandbox.requests("GET /v3/contact_lists/{list_id}") == {"200": burst}
    # The last of N starts (N-1)/rate after the first: 4.4 s at 3.6/s, 4 s at 4/s, 3.2 s at 5/s.
    # A loaded machine only makes it slower, never faster.
    assert elapsed >= (burst - 1) / (LIMIT * MARGIN) - 0.05
    assert (burst - 1) / elapsed < LIMIT


def function_timeout() -> float:
    """host.json's functionTimeout in seconds: the longest an activity may run."""
    raw: str = json.loads((ROOT / "host.json").read_text())["functionTimeout"]
    hours, minutes, seconds = raw.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def backoff_ceiling(policy: RetryPolicy, retry: int) -> float:
    """The longest wait before retry ``retry`` (1 = the first): doubling from the base,
    capped (RetryPolicy.delay's rule, written out here)."""
    return min(policy.backoff_cap, policy.backoff_base * 2.0 ** (retry - 1))


def test_the_production_retry_policy_is_bounded() -> None:
    policy = RetryPolicy()
    # What runs get: the function app and `ccexport run` build RunServices the same way.
    assert clients.run_services_from({"CTCT_CLIENT_ID": "bounded"}).retry == policy
    # A handful of tries, not hundreds: a 5xx outage is not cured by insisting.
    assert 2 <= policy.attempts <= 5
    assert 2 <= policy.throttled_attempts <= 10
    # Backoff starts under a second and is capped at seconds, not minutes.
    assert 0 < policy.backoff_base <= 1
    assert policy.backoff_base <= policy.backoff_cap <= 10
    assert 0 < policy.request_timeout <= 120
    for retry in range(1, 40):
        ceiling = backoff_ceiling(policy, retry)
        waits = [policy.delay(retry) for _ in range(50)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
    # The worst one request can cost: every failing try runs to its timeout, and every
    # retry (of failures and of throttled answers) waits its longest backoff. It must
    # end well inside host.json's functionTimeout, which would kill the activity.
    failures = policy.attempts * policy.request_timeout + sum(
        backoff_ceiling(policy, n) for n in range(1, policy.attempts)
    )
    throttled = sum(backoff_ceiling(policy, n) for n in range(1, policy.throttled_attempts))
    worst = failures + throttled
    assert worst <= function_timeout() / 2  # 655 s against 30 minutes
    assert function_timeout() == 30 * 60


async def test_the_production_retry_policy_gives_up_on_a_5xx_outage_in_seconds(
    sandbox_factory: Factory,
) -> None:
    sandbox = sandbox_factory(**UNLIMITED)
    list_id = sandbox.create_list()
    sandbox.faults(http_503={"rate": 1})
    policy = RetryPolicy()
    most = sum(backoff_ceiling(policy, n) for n in range(1, policy.attempts))  # 7.5 s
    async with ConstantContactClient(
        sandbox.api_base, SandboxTokens(sandbox), Pacer(200)
    ) as client:  # no retry= : the client's own default
        started = time.monotonic()
        with pytest.raises(RemoteError, match=rf"503.*gave up after {policy.attempts} attempts"):
            # Seconds, not minutes: a few tries with capped backoff (plus a loaded machine).
            await asyncio.wait_for(client.get_list(list_id), timeout=30)
        elapsed = time.monotonic() - started
    assert sandbox.requests("GET /v3/contact_lists/{list_id}") == {"503": policy.attempts}
    assert most / 2 <= elapsed <= 30
