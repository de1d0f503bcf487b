"""The pacer's decisions (shared/constant_contact/pacing.py) on a clock of the test's own: when each
request may start, how a 429 pushes everyone back, when the daily quota stops
everything and when it lets go, and that a state file makes two pacers one. Too fast
is Constant Contact refusing a run; a quota stop that never ends is a run that never
sends again."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.constant_contact.pacing import (
    QUOTA_MESSAGE,
    RETAKES,
    Pacer,
    Usage,
    _TooFarAhead,
    next_utc_midnight,
    process_pacer,
)
from shared.errors import QuotaExhausted
from shared.storage.records import Change, MemoryRecord

EVENING = datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC).timestamp()


class Time:
    """A monotonic and a wall clock that move only when a task sleeps."""

    def __init__(self, wall: float = EVENING, mono: float = 500.0) -> None:
        self.wall = wall
        self.mono = mono
        self.slept: list[float] = []

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def pacer(self, rate: float = 4.0, state_file: Path | None = None) -> Pacer:
        return Pacer(
            rate, state_file=state_file, clock=lambda: self.mono, wall_clock=lambda: self.wall
        )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Time:
    t = Time()

    async def sleep(seconds: float) -> None:
        t.slept.append(seconds)
        t.advance(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return t


@pytest.mark.parametrize("rate", [0, -1, -0.5])
def test_a_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match=r"^rate must be positive$"):
        Pacer(rate)


def test_the_default_rate_is_constant_contacts_four_a_second() -> None:
    assert Pacer().rate == 4.0
    assert Pacer(0.001).rate == 0.001


async def test_an_in_memory_pacer_keeps_time_on_the_monotonic_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wall clock may jump (NTP, a suspended laptop); slots in memory must not."""
    walls = iter([1_000_000.0, 1_000_000.0 - 3600, 1_000_000.0 + 3600] * 3)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    pacer = Pacer(0.01, wall_clock=lambda: next(walls))  # 100 s apart: no stall matters
    await pacer.wait()
    await pacer.wait()
    assert len(slept) == 1
    assert 90 < slept[0] <= 100  # one interval at most, not an hour more


async def test_starts_are_spaced_one_interval_apart(clock: Time) -> None:
    pacer = clock.pacer(4.0)
    for _ in range(4):
        await pacer.wait()
    assert clock.slept == [0.25, 0.25, 0.25]  # the first goes at once, then 4 a second
    assert pacer.waits == 3


async def test_clocks_that_start_at_zero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing is assumed of a clock's origin: the first request goes at once and no
    quota is stopped, in memory or from an empty or torn state file."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    for state in (None, tmp_path / "empty.json", tmp_path / "torn.json"):
        if state is not None and state.name == "torn.json":
            state.write_text("{torn")
        pacer = Pacer(4.0, state_file=state, clock=lambda: 0.0, wall_clock=lambda: 0.0)
        pacer.check_quota()
        await pacer.wait()
        assert slept == []


async def test_concurrent_callers_get_consecutive_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each caller takes its slot before it sleeps, so callers at the same moment wait
    one, two, ... intervals (the clock stands still while they all wait)."""
    t = Time()
    pause = asyncio.sleep
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await pause(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    pacer = t.pacer(2.0)
    await asyncio.gather(*(pacer.wait() for _ in range(3)))
    assert sorted(slept) == [0.5, 1.0]
    assert pacer.waits == 2


async def test_a_pause_longer_than_the_interval_costs_no_wait(clock: Time) -> None:
    pacer = clock.pacer(4.0)
    await pacer.wait()
    clock.advance(0.25)  # exactly the interval later: the slot is free
    await pacer.wait()
    clock.advance(10)
    await pacer.wait()
    assert (clock.slept, pacer.waits) == ([], 0)
    await pacer.wait()  # at once again: one interval
    assert clock.slept == [0.25]


async def test_hold_off_pushes_every_later_start_back(clock: Time) -> None:
    pacer = clock.pacer(4.0)
    await pacer.wait()
    pacer.hold_off(2.0)
    await pacer.wait()
    assert clock.slept == [2.0]
    pacer.hold_off(0.1)  # shorter than the slot already taken: nothing moves forward
    await pacer.wait()
    assert clock.slept == [2.0, 0.25]


async def test_the_quota_stops_everything_until_utc_midnight(clock: Time) -> None:
    pacer = clock.pacer(4.0)
    error = pacer.stop_for_the_day()
    assert str(error) == QUOTA_MESSAGE
    assert error.resets_at == "2026-03-02T00:00:00Z"
    assert error.status == 429
    with pytest.raises(QuotaExhausted) as caught:
        await pacer.wait()
    assert caught.value.resets_at == "2026-03-02T00:00:00Z"
    assert clock.slept == []
    clock.advance(29.9)
    with pytest.raises(QuotaExhausted) as again:
        pacer.check_quota()
    assert str(again.value) == QUOTA_MESSAGE
    assert again.value.resets_at == "2026-03-02T00:00:00Z"
    clock.advance(0.1)  # midnight: a new day's quota
    pacer.check_quota()
    await pacer.wait()


async def test_a_second_stop_keeps_the_later_end(clock: Time) -> None:
    pacer = clock.pacer()
    pacer.stop_for_the_day()
    clock.wall -= 86_400  # a clock that went back a day must not shorten the stop
    pacer.stop_for_the_day()
    clock.wall += 86_400 + 30
    pacer.check_quota()


async def test_the_quota_can_run_out_while_a_caller_waits(
    clock: Time, monkeypatch: pytest.MonkeyPatch
) -> None:
    pacer = clock.pacer(1.0)
    await pacer.wait()
    sleeping = asyncio.sleep  # the clock's

    async def stop_while_waiting(seconds: float) -> None:
        pacer.stop_for_the_day()
        await sleeping(seconds)

    monkeypatch.setattr(asyncio, "sleep", stop_while_waiting)
    with pytest.raises(QuotaExhausted):
        await pacer.wait()
    assert clock.slept == [1.0]


def test_next_utc_midnight() -> None:
    at = datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()
    assert next_utc_midnight(at) == datetime(2027, 1, 1, tzinfo=UTC)
    midnight = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
    assert next_utc_midnight(midnight) == datetime(2026, 3, 3, tzinfo=UTC)
    assert next_utc_midnight(0.0) == datetime(1970, 1, 2, tzinfo=UTC)
    now = next_utc_midnight()
    assert (now.hour, now.minute, now.second, now.microsecond, now.tzinfo) == (0, 0, 0, 0, UTC)
    assert 0 < now.timestamp() - datetime.now(UTC).timestamp() <= 86_400


# --- shared through a file ----------------------------------------------------------------------


async def test_pacers_on_one_file_share_the_slots(clock: Time, tmp_path: Path) -> None:
    state = tmp_path / "home" / "pace" / "pacer.json"
    one, two = clock.pacer(4.0, state_file=state), clock.pacer(4.0, state_file=state)
    await one.wait()
    await two.wait()
    await one.wait()
    assert clock.slept == [0.25, 0.25]
    doc = json.loads(state.read_text())
    assert doc == {
        "next": pytest.approx(clock.mono + 0.25),
        "quota_until": 0.0,
        "day": "2026-03-01",
        "used": 3,
    }
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    two.hold_off(3.0)
    await one.wait()
    assert clock.slept[-1] == pytest.approx(3.0)


async def test_a_shared_pacer_keeps_its_slots_on_the_wall_clock(
    clock: Time, tmp_path: Path
) -> None:
    state = tmp_path / "pacer.json"
    pacer = Pacer(4.0, state_file=state, wall_clock=lambda: clock.wall)
    await pacer.wait()
    assert json.loads(state.read_text())["next"] == clock.wall + 0.25
    alone = Pacer(0.01, wall_clock=lambda: clock.wall)  # in memory: the monotonic clock
    await alone.wait()
    await alone.wait()
    assert 90 < clock.slept[-1] <= 100  # 100 s apart, less the real time in between


async def test_the_quota_stop_is_shared_through_the_file(clock: Time, tmp_path: Path) -> None:
    state = tmp_path / "pacer.json"
    one, two = clock.pacer(state_file=state), clock.pacer(state_file=state)
    error = one.stop_for_the_day()
    with pytest.raises(QuotaExhausted) as caught:
        await two.wait()
    assert caught.value.resets_at == error.resets_at == "2026-03-02T00:00:00Z"
    assert (
        json.loads(state.read_text())["quota_until"] == datetime(2026, 3, 2, tzinfo=UTC).timestamp()
    )
    one.hold_off(1.0)  # a slot change keeps the stop
    with pytest.raises(QuotaExhausted):
        two.check_quota()
    clock.advance(30)
    await two.wait()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{torn",
        b'{"next": 5}',
        b'{"next": null, "quota_until": 0}',
        b"[1, 2]",
        b'{"next": 5, "quota_until": 0, "day": 3, "used": 9}',
        b'{"next": 5, "quota_until": 0, "day": "2026-03-01", "used": "9"}',
    ],
)
async def test_a_torn_or_strange_file_starts_afresh(
    clock: Time, tmp_path: Path, content: bytes
) -> None:
    state = tmp_path / "pacer.json"
    state.write_bytes(content)
    pacer = clock.pacer(state_file=state)
    pacer.check_quota()
    await pacer.wait()
    assert clock.slept == []
    assert json.loads(state.read_text()) == {
        "next": clock.mono + 0.25,
        "quota_until": 0.0,
        "day": "2026-03-01",
        "used": 1,
    }


async def test_a_longer_old_file_is_replaced_whole(clock: Time, tmp_path: Path) -> None:
    state = tmp_path / "pacer.json"
    state.write_text(json.dumps({"next": 1.0, "quota_until": 0.0, "pad": "x" * 200}))
    await clock.pacer(state_file=state).wait()
    assert json.loads(state.read_text()) == {
        "next": clock.mono + 0.25,
        "quota_until": 0.0,
        "day": "2026-03-01",
        "used": 1,
    }
    assert os.path.getsize(state) < 100


def test_one_pacer_per_api_key_in_a_process() -> None:
    first = process_pacer("mutation-key-a", rate=2.5)
    assert process_pacer("mutation-key-a", rate=9.0) is first
    assert first.rate == 2.5
    other = process_pacer("mutation-key-b")
    assert other is not first
    assert other.rate == 4.0


# --- the day's count and the reach ahead ----------------------------------------------------


async def test_each_start_is_counted_on_its_utc_day(clock: Time) -> None:
    """EVENING is 30 s before midnight: the count starts again at 00:00 UTC, and a
    refused start (the quota stopped) or a push back counts nothing."""
    pacer = clock.pacer(4.0)
    for _ in range(3):
        await pacer.wait()
    pacer.hold_off(1.0)
    assert pacer.usage() == Usage("none", "2026-03-01", 3, None)
    clock.advance(30)
    assert pacer.usage() == Usage("none", "2026-03-02", 0, None)
    await pacer.wait()
    assert pacer.usage().used == 1
    error = pacer.stop_for_the_day()
    with pytest.raises(QuotaExhausted):
        await pacer.wait()
    assert pacer.usage() == Usage("none", "2026-03-02", 1, error.resets_at)


async def test_slots_within_reach_are_taken_at_once(clock: Time) -> None:
    """With ahead=0.5 at 4/s a caller still takes the slot half a second ahead."""
    pacer = Pacer(4.0, clock=lambda: clock.mono, wall_clock=lambda: clock.wall, ahead=0.5)
    for _ in range(3):
        await pacer.wait()
    assert clock.slept == [0.25, 0.25]
    assert pacer.waits == 2


async def test_a_caller_beyond_the_reach_waits_and_asks_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = Time()
    pause = asyncio.sleep
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        t.advance(seconds)
        await pause(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    pacer = Pacer(4.0, clock=lambda: t.mono, wall_clock=lambda: t.wall, ahead=0.5)
    await asyncio.gather(*(pacer.wait() for _ in range(5)))
    assert pacer.usage().used == 5
    # Three took slots at once (now, +0.25, +0.5); the other two waited without one
    # until theirs came within reach, then for it: 4/s all the same.
    assert t.mono - 500.0 == pytest.approx(1.0, abs=0.25)
    assert max(slept) <= 0.5 + 0.125  # never more than the reach and half a slot


def test_a_negative_reach_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^ahead must not be negative$"):
        Pacer(ahead=-1)


def oversleeping(
    t: Time, monkeypatch: pytest.MonkeyPatch, late: Callable[[int], float]
) -> list[float]:
    """asyncio.sleep on the test's clock, waking ``late(n)`` seconds late on the n-th sleep."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        t.advance(seconds + late(len(slept)))

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


async def test_a_task_too_late_for_its_slot_takes_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """Woken 0.2 s after its slot, a request would arrive close to the next one: it
    takes the next free slot instead; the day's count takes the request once."""
    t = Time()
    slept = oversleeping(t, monkeypatch, lambda n: 0.2 if n == 1 else 0.0)
    pacer = Pacer(4.0, clock=lambda: t.mono, wall_clock=lambda: t.wall, late_after=0.05)
    await pacer.wait()
    await pacer.wait()
    assert pacer.missed == 1
    assert slept == [0.25, pytest.approx(0.05)]  # woke at +0.45; the slot at +0.5 was next
    assert pacer.usage().used == 2
    await pacer.wait()
    assert slept[-1] == pytest.approx(0.25)


async def test_a_task_always_late_goes_after_its_retakes(monkeypatch: pytest.MonkeyPatch) -> None:
    t = Time()
    oversleeping(t, monkeypatch, lambda _n: 0.2)
    pacer = Pacer(4.0, clock=lambda: t.mono, wall_clock=lambda: t.wall, late_after=0.05)
    await pacer.wait()
    await pacer.wait()
    assert pacer.missed == RETAKES
    assert pacer.usage().used == 2


async def test_without_late_after_a_late_task_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    t = Time()
    oversleeping(t, monkeypatch, lambda _n: 5.0)
    pacer = Pacer(4.0, clock=lambda: t.mono, wall_clock=lambda: t.wall)
    await pacer.wait()
    await pacer.wait()
    assert (pacer.missed, pacer.usage().used) == (0, 2)


class CountingRecord(MemoryRecord):
    """A record in memory that counts the changes asked of it (each a storage round trip
    on a blob)."""

    def __init__(self) -> None:
        super().__init__()
        self.updates = 0

    def update(self, change: Change) -> bytes:
        self.updates += 1
        return super().update(change)


async def test_waiters_out_of_reach_do_not_each_ask_the_record(clock: Time) -> None:
    """Once a reservation found the next slot out of reach, the process's other
    callers wait until it may be in reach without a storage round trip each."""
    record = CountingRecord()
    pacer = Pacer(
        4.0, record=record, clock=lambda: clock.mono, wall_clock=lambda: clock.wall, ahead=0.0
    )
    await pacer.wait()  # at once; the next slot is 0.25 s away, beyond the reach
    asked = record.updates
    for _ in range(3):
        with pytest.raises(_TooFarAhead) as held:
            pacer._update(pacer._reserve(clock.wall), reserving=True)
        assert 0.25 <= held.value.seconds <= 0.25 + 0.125  # the wait, a little spread
    assert record.updates == asked + 1  # the first asked; the others knew
    clock.advance(0.25)
    await pacer.wait()
    assert (pacer.usage().used, clock.slept) == (2, [])
