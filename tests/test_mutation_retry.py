"""The client's retry decisions (shared/constant_contact/transport.py), one answer at a time.

The retry loop is driven here by a script of answers instead of the sandbox, so every
branch is reached in microseconds and its counts are exact: which answers are retried,
how often, how long the client waits (the jitter is pinned to its ceiling), what the
pacer is told, and when it gives up. A wrong bound here is a run that hammers Constant
Contact, or one that gives up on the first 503 and loses a chunk.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Iterator, Sequence

import aiohttp
import pytest
from yarl import URL

from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.pacing import Pacer
from shared.constant_contact.transport import Call, RetryPolicy, api_messages, error_key
from shared.errors import QuotaExhausted, RemoteError, ThrottledGiveUp

POLICY = RetryPolicy(attempts=3, throttled_attempts=4, backoff_base=1.0, backoff_cap=3.0)
CALL = Call("GET", "GET /contact_lists/{list_id}", URL("http://127.0.0.1:9/v3/contact_lists/x"))
IMPORT = Call(
    "POST", "POST /activities/contacts_json_import", URL("http://127.0.0.1:9/v3/i"), is_import=True
)
THROTTLED = b'[{"error_key":"throttled","error_message":"Too many requests"}]'
QUOTA = b'{"error_key":"quota_exceeded","error_message":"Limit Exceeded"}'

Answer = tuple[int, bytes] | BaseException


class RecordingPacer(Pacer):
    """A pacer that lets everything through at once and remembers what it was told."""

    def __init__(self) -> None:
        super().__init__(1000.0)
        self.waited = 0
        self.held: list[float] = []
        self.stopped = 0

    async def wait(self) -> None:
        self.waited += 1

    def hold_off(self, seconds: float) -> None:
        self.held.append(seconds)

    def stop_for_the_day(self) -> QuotaExhausted:
        self.stopped += 1
        return QuotaExhausted("stopped for the day", resets_at="2026-01-02T00:00:00Z")


class Scripted(ConstantContactClient):
    """The client with its one network call replaced by a script of answers."""

    def __init__(self, answers: Sequence[Answer], policy: RetryPolicy = POLICY) -> None:
        self.forced: list[bool] = []

        async def tokens(force: bool) -> str:
            self.forced.append(force)
            return "token"

        self.pacer = RecordingPacer()
        super().__init__("http://127.0.0.1:9/v3", tokens, self.pacer, retry=policy)
        self._answers: Iterator[Answer] = iter(answers)

    async def _send(self, call: Call) -> tuple[int, bytes]:
        self.stats.requests += 1
        answer = next(self._answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between tries, with the jitter at its ceiling (uniform(a, b) -> b)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(random, "uniform", lambda _low, high: high)
    return waits


def ceiling(retry: int, policy: RetryPolicy = POLICY) -> float:
    """The longest wait before retry ``retry`` (1 = the first), written out: doubling
    from the base, capped."""
    return float(min(policy.backoff_cap, policy.backoff_base * 2 ** (retry - 1)))


# --- RetryPolicy.delay -------------------------------------------------------------------------


def test_the_backoff_doubles_from_the_base_up_to_the_cap_with_half_of_it_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return (low + high) / 2

    monkeypatch.setattr(random, "uniform", uniform)
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=8.0)
    delays = [policy.delay(retry) for retry in (0, 1, 2, 3, 4, 5, 6, 10)]
    highs = [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert asked == [(h / 2, h) for h in highs]
    assert delays == [0.75 * h for h in highs]


def test_the_backoff_stays_between_half_and_all_of_its_ceiling() -> None:
    policy = RetryPolicy(backoff_base=0.25, backoff_cap=2.0)
    random.seed(5)
    for retry in range(1, 8):
        high = min(2.0, 0.25 * 2 ** (retry - 1))
        for _ in range(50):
            assert high / 2 <= policy.delay(retry) <= high


# --- success, refusals -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 299])
async def test_any_2xx_is_the_answer(status: int, slept: list[float]) -> None:
    client = Scripted([(status, b'{"ok":1}')])
    assert await client._request(CALL) == b'{"ok":1}'
    assert (client.stats.requests, client.stats.retries, slept) == (1, 0, [])


@pytest.mark.parametrize("status", [199, 300, 304, 400, 404, 409, 499])
async def test_other_answers_below_500_are_refusals_with_the_api_message(
    status: int, slept: list[float]
) -> None:
    body = b'[{"error_key":"x","error_message":"name is required"}]'
    client = Scripted([(status, body)])
    with pytest.raises(RemoteError) as caught:
        await client._request(CALL)
    assert caught.value.status == status
    assert str(caught.value) == (
        f"GET /contact_lists/{{list_id}}: Constant Contact refused the request ({status}): "
        "name is required"
    )
    assert (client.stats.requests, client.stats.retries, client.forced, slept) == (1, 0, [], [])


# --- 401: one refresh --------------------------------------------------------------------------


async def test_a_401_forces_one_token_refresh_then_tries_again(slept: list[float]) -> None:
    client = Scripted([(401, b""), (200, b"yes")])
    assert await client._request(CALL) == b"yes"
    assert client.forced == [True]
    assert (client.stats.token_refreshes, client.stats.requests, client.stats.retries) == (1, 2, 0)
    assert slept == []


async def test_a_second_401_is_final_even_after_other_retries(slept: list[float]) -> None:
    client = Scripted([(401, b""), (503, b""), (401, b'{"error_key":"unauthorized"}')])
    with pytest.raises(RemoteError) as caught:
        await client._request(CALL)
    assert caught.value.status == 401
    assert not isinstance(caught.value, (QuotaExhausted, ThrottledGiveUp))
    assert "refused the access token even after a refresh (401 unauthorized)" in str(caught.value)
    assert client.forced == [True]
    assert (client.stats.token_refreshes, client.stats.requests) == (1, 3)


async def test_each_request_gets_its_own_refresh(slept: list[float]) -> None:
    client = Scripted([(401, b""), (200, b"one"), (401, b""), (200, b"two")])
    assert await client._request(CALL) == b"one"
    assert await client._request(CALL) == b"two"
    assert client.forced == [True, True]
    assert client.stats.token_refreshes == 2


# --- 429: quota and throttling -----------------------------------------------------------------


async def test_quota_exceeded_stops_the_pacer_for_the_day_without_a_retry(
    slept: list[float],
) -> None:
    client = Scripted([(429, QUOTA), (200, b"never")])
    with pytest.raises(QuotaExhausted, match="stopped for the day"):
        await client._request(CALL)
    assert client.pacer.stopped == 1
    assert (client.stats.requests, client.stats.throttled, client.stats.retries) == (1, 0, 0)
    assert (client.pacer.held, slept) == ([], [])


@pytest.mark.parametrize("body", [THROTTLED, b"", b"<html>busy</html>", b'{"error_key":3}'])
async def test_throttled_holds_everyone_off_and_tries_again(
    body: bytes, slept: list[float]
) -> None:
    answers: list[Answer] = [(429, body)] * (POLICY.throttled_attempts - 1)
    client = Scripted([*answers, (200, b"done")])
    assert await client._request(CALL) == b"done"
    throttles = POLICY.throttled_attempts - 1
    # the pacer is pushed back (every task sharing it waits), not this task put to sleep
    assert client.pacer.held == [ceiling(n) for n in range(1, throttles + 1)] == [1.0, 2.0, 3.0]
    assert slept == []
    assert client.pacer.stopped == 0
    assert (client.stats.throttled, client.stats.retries) == (throttles, throttles)
    assert client.stats.requests == throttles + 1


async def test_throttled_gives_up_after_the_bounded_attempts(slept: list[float]) -> None:
    client = Scripted([(429, THROTTLED)] * POLICY.throttled_attempts + [(200, b"never")])
    with pytest.raises(ThrottledGiveUp) as caught:
        await client._request(CALL)
    assert str(caught.value) == (
        "GET /contact_lists/{list_id}: still throttled by Constant Contact "
        "(429 Too many requests) after 4 attempts"
    )
    assert client.stats.requests == POLICY.throttled_attempts
    assert client.stats.throttled == POLICY.throttled_attempts
    assert client.stats.retries == POLICY.throttled_attempts - 1
    assert len(client.pacer.held) == POLICY.throttled_attempts - 1


# --- 5xx and connection errors -----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
async def test_5xx_is_retried_with_backoff_then_succeeds(status: int, slept: list[float]) -> None:
    client = Scripted([(status, b""), (status, b""), (200, b"ok")])
    assert await client._request(CALL) == b"ok"
    assert slept == [ceiling(1), ceiling(2)] == [1.0, 2.0]
    assert (client.stats.retries, client.stats.requests, client.stats.import_resends) == (2, 3, 0)
    assert client.pacer.held == []  # a 5xx is this request's trouble, not the key's


async def test_5xx_gives_up_after_the_bounded_attempts(slept: list[float]) -> None:
    body = b'{"error_message":"down for a@b.example"}'
    client = Scripted([(503, body)] * POLICY.attempts + [(200, b"never")])
    with pytest.raises(RemoteError) as caught:
        await client._request(CALL)
    assert caught.value.status == 503
    assert str(caught.value) == (
        "GET /contact_lists/{list_id}: HTTP 503 (down for <email>); gave up after 3 attempts"
    )
    assert client.stats.requests == POLICY.attempts
    assert client.stats.retries == POLICY.attempts - 1
    assert slept == [1.0, 2.0]


async def test_the_backoff_reaches_its_cap(slept: list[float]) -> None:
    policy = RetryPolicy(attempts=6, backoff_base=1.0, backoff_cap=3.0)
    client = Scripted([(500, b"")] * 5 + [(200, b"ok")], policy)
    assert await client._request(CALL) == b"ok"
    assert slept == [1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ClientConnectionError("reset"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut short"),
        TimeoutError(),
    ],
    ids=["connection", "disconnected", "payload", "timeout"],
)
async def test_connection_errors_are_retried_like_5xx(
    error: BaseException, slept: list[float]
) -> None:
    client = Scripted([error, (200, b"ok")])
    assert await client._request(CALL) == b"ok"
    assert (client.stats.retries, slept) == (1, [1.0])
    gives_up = Scripted([error] * POLICY.attempts)
    with pytest.raises(RemoteError) as caught:
        await gives_up._request(CALL)
    assert caught.value.status is None
    assert str(caught.value) == (
        f"GET /contact_lists/{{list_id}}: connection error ({type(error).__name__}); "
        "gave up after 3 attempts"
    )


async def test_other_client_errors_are_not_retried_and_name_no_url(slept: list[float]) -> None:
    client = Scripted([aiohttp.InvalidURL("http://x/?email=a@b.example"), (200, b"never")])
    with pytest.raises(RemoteError) as caught:
        await client._request(CALL)
    assert str(caught.value) == "GET /contact_lists/{list_id}: InvalidURL"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert (client.stats.requests, client.stats.retries, slept) == (1, 0, [])


async def test_the_log_names_each_attempt(
    slept: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.constant_contact.transport")
    client = Scripted([(503, b""), aiohttp.ClientConnectionError(), (429, THROTTLED), (200, b"")])
    await client._request(CALL)
    assert [r.getMessage() for r in caplog.records] == [
        "GET /contact_lists/{list_id} -> 503 (attempt 1)",
        "GET /contact_lists/{list_id}: HTTP 503 (no error message) (attempt 1); retrying in 1.00s",
        "GET /contact_lists/{list_id}: connection error (ClientConnectionError) (attempt 2); "
        "retrying in 2.00s",
        "GET /contact_lists/{list_id} -> 429 (attempt 3)",
        "GET /contact_lists/{list_id} -> 429 throttled (attempt 3); backing off 1.00s",
        "GET /contact_lists/{list_id} -> 200 (attempt 4)",
    ]


async def test_an_import_sent_again_is_counted_as_a_resend(slept: list[float]) -> None:
    client = Scripted([(502, b""), aiohttp.ClientConnectionError(), (201, b"{}")])
    assert await client._request(IMPORT) == b"{}"
    assert client.stats.import_resends == 2
    assert client.stats.retries == 2


async def test_5xx_failures_and_throttles_are_counted_apart(slept: list[float]) -> None:
    policy = RetryPolicy(attempts=2, throttled_attempts=2, backoff_base=1.0, backoff_cap=3.0)
    client = Scripted([(503, b""), (429, THROTTLED), (200, b"ok")], policy)
    assert await client._request(CALL) == b"ok"  # one of each: neither bound is reached
    assert (slept, client.pacer.held) == ([1.0], [1.0])
    client = Scripted([(429, THROTTLED), (503, b""), (503, b"")], policy)
    with pytest.raises(RemoteError, match="gave up after 2 attempts"):
        await client._request(CALL)


async def test_every_try_goes_through_the_pacer() -> None:
    """The real _send: each attempt waits for the pacer before it goes (here it cannot
    go at all: nothing listens on the port, so each try is a connection error)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    call = Call("GET", "GET /x", URL(f"http://127.0.0.1:{port}/v3/x"))
    waits: list[int] = []

    class Counting(Pacer):
        async def wait(self) -> None:
            waits.append(1)

    async def tokens(_force: bool) -> str:
        return "t"

    policy = RetryPolicy(attempts=2, backoff_base=0.001, backoff_cap=0.001, request_timeout=5)
    base = f"http://127.0.0.1:{port}/v3"
    async with ConstantContactClient(base, tokens, Counting(), retry=policy) as client:
        with pytest.raises(RemoteError, match="gave up after 2 attempts"):
            await client._request(call)
    assert waits == [1, 1]


# --- error bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'[{"error_key":"throttled","error_message":"x"}]', "throttled"),
        (b'{"error_key":"quota_exceeded"}', "quota_exceeded"),
        (b'[1, "a", {"error_key":"second"}]', "second"),
        (b'[{"error_key":3}, {"error_key":"string"}]', "string"),
        (b'[{"error_message":"no key"}]', None),
        (b"[]", None),
        (b"", None),
        (b"<html>", None),
        (b'"quota_exceeded"', None),
    ],
)
def test_the_error_key_of_either_body_shape(raw: bytes, key: str | None) -> None:
    assert error_key(raw) == key


def test_messages_come_from_the_first_field_each_item_has() -> None:
    raw = b'[{"error":"e","error_key":"k"},{"error_description":"d","error":"x"},'
    raw += b'{"error_message":""}]'
    assert api_messages(raw) == "k; d"
    assert api_messages(b"") == "no error message"
