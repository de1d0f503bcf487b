"""Token refresh under the lock (shared/constant_contact/tokens.py TokenManager), with a
clock, a store, locks and a token endpoint of its own, so each decision is seen alone: when a token
is still good, when the store's copy is used instead of refreshing, that a refresh
happens only under the connection's lock and is stored before it is used, and what a
refused or unstorable refresh leaves behind. A rotating refresh token spent twice, or
spent without the lock, is a connection that needs a person to reconnect it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import orjson
import pytest

from shared.constant_contact.oauth import InvalidGrant, OAuthClient, TokenBundle
from shared.constant_contact.tokens import TokenManager, lock_name, status_secret, tokens_secret
from shared.errors import ReauthorizationRequired
from shared.secrets.store import SecretStoreError
from shared.storage.locks import HeldLock, LockLost

PAUSE = asyncio.sleep  # the real one: a store that answers later lets other tasks run
NOW = 1_000_000.0
HOUR = 3600.0
CONNECTION = "mkt"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class MemoryStore:
    """A secret store in a dict, with a failure to order and every write remembered."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes: list[tuple[str, str, str | None]] = []
        self.reads = 0
        self.fail_sets = 0

    async def get(self, name: str) -> str | None:
        self.reads += 1
        await PAUSE(0)  # a network round trip: other tasks run meanwhile
        return self.values.get(name)

    async def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if self.fail_sets:
            self.fail_sets -= 1
            raise SecretStoreError("the vault said no")
        self.writes.append((name, value, content_type))
        self.values[name] = value

    async def delete(self, name: str) -> bool:
        return self.values.pop(name, None) is not None

    async def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.values if n.startswith(prefix))

    async def close(self) -> None:
        return None


class RecordingLocks:
    """Locks that are always free; they remember what was held, and can be 'lost'."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.held: list[tuple[str, float]] = []
        self.lose = False

    def hold(self, name: str, *, timeout: float = 60.0) -> AbstractAsyncContextManager[HeldLock]:
        @asynccontextmanager
        async def holding() -> AsyncIterator[HeldLock]:
            self.held.append((name, timeout))
            self.events.append("lock")
            lock = HeldLock(name, waited=False)
            lock.lost = self.lose
            try:
                yield lock
            finally:
                self.events.append("unlock")

        return holding()


class Endpoint(OAuthClient):
    """The token endpoint: each refresh answers the next bundle, or raises."""

    def __init__(self, events: list[str], clock: Clock) -> None:
        super().__init__("http://127.0.0.1:9/oauth2", "client", "secret")
        self.events = events
        self.clock = clock
        self.spent: list[str] = []
        self.refuse = False
        self.rotate = True

    @property
    def min_interval(self) -> float:
        return 1.1

    async def refresh(self, refresh_token: str) -> TokenBundle:
        self.events.append("refresh")
        self.spent.append(refresh_token)
        if self.refuse:
            raise InvalidGrant("invalid_grant")
        n = len(self.spent)
        return TokenBundle(
            access_token=f"access-{n}",
            refresh_token=f"refresh-{n}" if self.rotate else refresh_token,
            expires_at=self.clock.now + HOUR,
            scope="contact_data offline_access",
            issued_at=self.clock.now,
        )


class Setup:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.clock = Clock()
        self.store = MemoryStore()
        self.locks = RecordingLocks(self.events)
        self.endpoint = Endpoint(self.events, self.clock)

    def manager(self, *, margin: float = 300.0, lock_timeout: float = 45.0) -> TokenManager:
        return TokenManager(
            CONNECTION,
            self.store,
            self.locks,
            self.endpoint,
            refresh_margin=margin,
            lock_timeout=lock_timeout,
            clock=self.clock,
        )

    def stored(self, bundle: TokenBundle | None) -> None:
        if bundle is None:
            self.store.values.pop(tokens_secret(CONNECTION), None)
        else:
            self.store.values[tokens_secret(CONNECTION)] = bundle.to_json()

    def stored_bundle(self) -> TokenBundle:
        return TokenBundle.from_json(self.store.values[tokens_secret(CONNECTION)])


def bundle(
    access: str = "access-0",
    refresh: str | None = "refresh-0",
    *,
    left: float = HOUR,
    lifetime: float = HOUR,
) -> TokenBundle:
    expires = NOW + left
    return TokenBundle(access, refresh, expires, "contact_data", issued_at=expires - lifetime)


def reconnect(reason: str) -> str:
    """The whole message: it names the connection and what to run."""
    return (
        f"connection 'mkt' needs to be reconnected: {reason} "
        "(run `ccexport connect --connection mkt`)"
    )


async def refused(tokens: TokenManager, reason: str) -> None:
    with pytest.raises(ReauthorizationRequired) as caught:
        await tokens.access_token()
    assert str(caught.value) == reconnect(reason)
    assert caught.value.connection == CONNECTION


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return waits


# --- TokenBundle.fresh --------------------------------------------------------------------


def test_fresh_means_more_than_the_margin_left() -> None:
    token = bundle(left=HOUR)
    expires = token.expires_at
    assert token.fresh(expires - 301, 300)
    assert not token.fresh(expires - 300, 300)  # exactly the margin left: refresh now
    assert not token.fresh(expires + 1, 300)


def test_a_short_lived_token_is_fresh_until_its_last_tenth() -> None:
    token = bundle(left=10, lifetime=10)  # lives 10 s: a margin of 300 s would never do
    expires = token.expires_at
    assert token.fresh(expires - 1.01, 300)
    assert not token.fresh(expires - 1.0, 300)
    assert token.fresh(expires - 0.6, 0.5)  # a margin under a tenth still wins
    assert not token.fresh(expires - 0.5, 0.5)


def test_a_token_issued_after_its_expiry_is_fresh_until_it_expires() -> None:
    odd = TokenBundle("a", "r", expires_at=NOW + 5, issued_at=NOW + 50)
    assert odd.fresh(NOW + 4.9, 300)
    assert not odd.fresh(NOW + 5, 300)


# --- where a token comes from ---------------------------------------------------------------


async def test_a_fresh_stored_token_is_used_without_a_lock_or_a_refresh(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle("stored", left=HOUR))
    tokens = s.manager()
    assert await tokens.access_token() == "stored"
    assert (tokens.source, tokens.refreshes, s.locks.held, s.endpoint.spent) == ("store", 0, [], [])
    reads = s.store.reads
    assert await tokens.access_token() == "stored"  # from memory now
    assert (tokens.source, s.store.reads) == ("cache", reads)


async def test_the_cached_token_is_read_again_once_it_is_within_the_margin(
    slept: list[float],
) -> None:
    s = Setup()
    s.stored(bundle("first", left=HOUR))
    tokens = s.manager(margin=300)
    assert await tokens.access_token() == "first"
    s.stored(bundle("someone-elses", left=2 * HOUR))  # another process refreshed meanwhile
    s.clock.now = NOW + HOUR - 300  # the cached one is due
    assert await tokens.access_token() == "someone-elses"
    assert (tokens.source, s.endpoint.spent) == ("store", [])


async def test_a_stale_token_is_refreshed_under_the_lock_and_stored_before_use(
    slept: list[float],
) -> None:
    s = Setup()
    s.stored(bundle("old", "refresh-old", left=100))  # within the 300 s margin
    tokens = s.manager(lock_timeout=45.0)
    assert await tokens.access_token() == "access-1"
    assert s.locks.held == [(lock_name(CONNECTION), 45.0)]
    assert s.events == ["lock", "refresh", "unlock"]
    assert s.endpoint.spent == ["refresh-old"]
    name, value, content_type = s.store.writes[-1]
    assert (name, content_type) == (tokens_secret(CONNECTION), "application/json")
    assert TokenBundle.from_json(value).refresh_token == "refresh-1"  # the rotated one is kept
    assert (tokens.source, tokens.refreshes) == ("refresh", 1)
    assert tokens.expires_at == NOW + HOUR
    assert await tokens.access_token() == "access-1"  # and then cached
    assert (tokens.source, tokens.refreshes) == ("cache", 1)


async def test_whoever_held_the_lock_before_may_have_refreshed_already(
    slept: list[float],
) -> None:
    s = Setup()
    s.stored(bundle("old", left=100))
    tokens = s.manager()

    class Swap(RecordingLocks):
        def hold(
            self, name: str, *, timeout: float = 60.0
        ) -> AbstractAsyncContextManager[HeldLock]:
            s.stored(bundle("theirs", "refresh-theirs", left=HOUR))  # refreshed while we waited
            return super().hold(name, timeout=timeout)

    tokens._locks = Swap(s.events)
    assert await tokens.access_token() == "theirs"
    assert (tokens.source, s.endpoint.spent, tokens.refreshes) == ("store", [], 0)


async def test_a_refused_token_is_refreshed_even_when_it_looks_fresh(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle("refused", left=HOUR))
    tokens = s.manager()
    assert await tokens.access_token() == "refused"
    assert await tokens.access_token(force_refresh=True) == "access-1"
    assert s.endpoint.spent == ["refresh-0"]
    assert tokens.source == "refresh"


async def test_a_refused_token_is_not_refreshed_when_the_store_has_a_newer_one(
    slept: list[float],
) -> None:
    s = Setup()
    s.stored(bundle("refused", left=HOUR))
    tokens = s.manager()
    assert await tokens.access_token() == "refused"
    s.stored(bundle("newer", "refresh-newer", left=HOUR))
    assert await tokens.access_token(force_refresh=True) == "newer"
    assert (s.endpoint.spent, tokens.source) == ([], "store")


async def test_a_forced_refresh_without_a_token_in_memory_refreshes(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle("stored", left=HOUR))
    tokens = s.manager()
    assert await tokens.access_token(force_refresh=True) == "stored"  # nothing was refused yet
    assert s.endpoint.spent == []


async def test_many_callers_at_once_share_one_refresh(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle("old", left=10))
    tokens = s.manager()
    got = await asyncio.gather(*(tokens.access_token() for _ in range(8)))
    assert got == ["access-1"] * 8
    assert s.endpoint.spent == ["refresh-0"]
    assert tokens.refreshes == 1
    # the first read the tokens twice (before and under the lock) and the status once;
    # the seven that waited took its token from memory without reading the store
    assert s.store.reads == 3
    assert tokens.source == "cache"


async def test_each_refresh_is_counted(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle("old", left=10))
    tokens = s.manager()
    await tokens.access_token()
    await tokens.access_token(force_refresh=True)
    assert tokens.refreshes == 2
    assert s.endpoint.spent == ["refresh-0", "refresh-1"]  # each time the latest one


# --- the token endpoint's 1 request/s ---------------------------------------------------------


async def test_a_refresh_waits_out_the_token_endpoints_gap(slept: list[float]) -> None:
    s = Setup()
    s.stored(TokenBundle("old", "r", expires_at=NOW + 0.01, issued_at=NOW - 0.4))
    tokens = s.manager()
    assert await tokens.access_token() == "access-1"
    assert slept == [pytest.approx(0.7)]  # issued 0.4 s ago, 1.1 s apart
    s2 = Setup()
    s2.stored(TokenBundle("old", "r", expires_at=NOW + 0.01, issued_at=NOW - 1.1))
    assert await s2.manager().access_token() == "access-1"
    assert slept == [pytest.approx(0.7)]  # no wait when the gap has passed


# --- what cannot be refreshed -----------------------------------------------------------------


async def test_no_stored_tokens_needs_reconnecting(slept: list[float]) -> None:
    s = Setup()
    await refused(s.manager(), "no tokens are stored for it")
    assert s.endpoint.spent == []


async def test_unreadable_stored_tokens_need_reconnecting(slept: list[float]) -> None:
    s = Setup()
    s.store.values[tokens_secret(CONNECTION)] = "{not json"
    await refused(s.manager(), "its stored tokens are unreadable")
    assert s.endpoint.spent == []


async def test_a_connection_marked_for_reconnecting_is_not_refreshed(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle(left=10))
    s.store.values[status_secret(CONNECTION)] = orjson.dumps(
        {"needs_reauthorization": True, "reason": "an admin said so"}
    ).decode()
    await refused(s.manager(), "an admin said so")
    assert s.endpoint.spent == []


async def test_tokens_without_a_refresh_token_need_reconnecting(slept: list[float]) -> None:
    s = Setup()
    for missing in (None, ""):
        s.stored(bundle(refresh=missing, left=10))
        await refused(s.manager(), "its tokens have no refresh token (offline_access missing?)")
    assert s.endpoint.spent == []


async def test_a_lost_lock_stops_the_refresh_before_it_spends_the_token(
    slept: list[float],
) -> None:
    s = Setup()
    s.stored(bundle(left=10))
    s.locks.lose = True
    with pytest.raises(LockLost):
        await s.manager().access_token()
    assert s.endpoint.spent == []


async def test_a_refused_refresh_token_marks_the_connection(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle(left=10))
    s.endpoint.refuse = True
    await refused(s.manager(), "Constant Contact refused its refresh token (invalid_grant)")
    status = orjson.loads(s.store.values[status_secret(CONNECTION)])
    assert status["needs_reauthorization"] is True
    assert status["reason"] == "Constant Contact refused its refresh token (invalid_grant)"
    await refused(s.manager(), "Constant Contact refused its refresh token (invalid_grant)")
    assert len(s.endpoint.spent) == 1


async def test_an_unstored_refresh_without_rotation_still_works(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle("old", "keeps", left=10))
    s.endpoint.rotate = False
    s.store.fail_sets = 1
    tokens = s.manager()
    assert await tokens.access_token() == "access-1"
    assert (tokens.source, tokens.refreshes) == ("refresh", 1)
    assert status_secret(CONNECTION) not in s.store.values
    assert s.stored_bundle().access_token == "old"  # the stored refresh token still works


async def test_an_unstored_rotated_refresh_token_marks_the_connection(slept: list[float]) -> None:
    s = Setup()
    s.stored(bundle("old", "spent", left=10))
    s.store.fail_sets = 1
    await refused(s.manager(), "its rotated tokens could not be stored (the vault said no)")
    status = orjson.loads(s.store.values[status_secret(CONNECTION)])
    assert status["reason"].startswith("its rotated tokens could not be stored (the vault said no")
