"""How fast, and whether at all, requests may go to one API key.

Constant Contact counts 4 requests/s and 10,000 a day per API key, for every worker
together. A ``Pacer`` is shared by everything in a process that talks to one key:
it spaces request starts at most ``rate`` per second (a token bucket holding one
token, so there is no burst the server could see as five in one second), lets a
throttled caller push everyone back, and, once the daily quota is gone, refuses
every further request until the quota resets instead of letting each task find out
with a request of its own. It counts the requests it lets through each UTC day.

Its state is a ``Record`` (shared/storage/records.py), so the same budget holds for
everyone who opens the same record: every process and instance of the function app
(a blob in the exports container), or every ``ccexport`` command sharing a
CCEXPORT_HOME (a file under ``flock``). Each request is one atomic change of the
record; nothing is held between requests, so a process that dies stalls nobody
beyond the slots it had reserved, at most ``ahead`` seconds of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.errors import QuotaExhausted
from shared.storage.records import FileRecord, MemoryRecord, Record

QUOTA_MESSAGE = "daily quota exhausted, resumes after 00:00 UTC"


PACING_MARGIN = 0.9
"""Requests start at 90 % of the allowed rate. Constant Contact counts 4 per sliding
second where the requests arrive, so five arrivals must span more than a second:
spaced at 90 %, four intervals span 1.11 s, and a request may arrive up to 0.11 s
later than the one four slots after it before a fifth lands in one second. Starts
spaced exactly at the limit had imports answered 429 (and sent again). In the
benchmark of many exports (docs/SCALE.md) a 429 at 90 % came only where the sandbox's
own loop had stalled, and the wall time was met only above 85 %."""


RESERVE_AHEAD = 2.0
"""Seconds ahead of now a shared pacer reserves slots: enough for every upload and
poll of a busy process to hold a place (at 3.6/s, seven), little enough that a
process killed with slots reserved leaves the others waiting at most this long."""


LATE_AFTER = 0.075
"""Seconds a request may start after its slot. One that starts late arrives closer
to the requests after it; at 90 % of 4/s the key's window allows 0.11 s of that
(above), and this leaves the rest for the way to the server. A task that finds itself
later (its process was descheduled, its storage answered slowly) takes a new slot: the
slot it leaves is lost to everyone, so a bound much tighter wastes the key's time on a
busy machine (at 0.05 s, 20 exports on 2 cores lost about 45 slots of 160)."""

RETAKES = 3
"""Slots a request gives up for being late before it goes late all the same."""


def next_utc_midnight(now: float | None = None) -> datetime:
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    return (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def key_label(api_key: str) -> str:
    """A name for an API key fit for telemetry and pages: the first 8 hex digits of
    its SHA-256. The key (the app's client id) is not a secret, but it is the app's
    credential's half and has no business in every metric; the label still tells
    two keys apart."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:8] if api_key else "none"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class PaceState:
    """What every pacer of one API key shares: the next free slot, the end of a
    quota stop, and how many requests were let through on the UTC day ``day``."""

    next: float = 0.0
    quota_until: float = 0.0
    day: str = ""
    used: int = 0

    @classmethod
    def parse(cls, raw: bytes | None) -> PaceState:
        """The state a record holds; an empty, torn or strange one starts afresh."""
        if not raw:
            return cls()
        try:
            doc = json.loads(raw)
            used = doc.get("used", 0)
            day = doc.get("day", "")
            if not isinstance(used, int) or not isinstance(day, str):
                return cls()
            return cls(float(doc["next"]), float(doc["quota_until"]), day, used)
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def encode(self) -> bytes:
        fields = {"next": self.next, "quota_until": self.quota_until}
        return json.dumps({**fields, "day": self.day, "used": self.used}).encode()

    def used_on(self, day: str) -> int:
        return self.used if self.day == day else 0


@dataclass(frozen=True)
class Usage:
    """An API key's day so far, as its pacers counted it."""

    key: str
    """The key's label (:func:`key_label`)."""
    day: str
    """The UTC day, YYYY-MM-DD."""
    used: int
    """Requests let through that day (a request sent again counts again)."""
    stopped_until: str | None
    """When a quota stop ends (ISO 8601, UTC), or None when sending is allowed."""
    read_at: float = field(default=0.0, compare=False)
    """The pacer's wall clock when this was read (seconds since the epoch): a run
    waiting for the reset times its wait from it, not from a clock of its own."""

    @property
    def resets_at(self) -> str:
        """When the day's quota starts again: the next 00:00 UTC."""
        start = datetime.strptime(self.day, "%Y-%m-%d").replace(tzinfo=UTC)
        return _iso(start + timedelta(days=1))

    def left(self, limit: int) -> int:
        """Requests left today of a daily quota of ``limit``."""
        return max(limit - self.used, 0)

    def to_json(self, limit: int) -> dict[str, object]:
        """What ``ccexport usage --json`` and ``GET /api/usage`` answer."""
        return {
            "key": self.key,
            "day": self.day,
            "used": self.used,
            "limit": limit,
            "left": self.left(limit),
            "resets_at": self.resets_at,
            "stopped_until": self.stopped_until,
        }


def utc_day(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%d")


class _TooFarAhead(Exception):
    """The next free slot is further ahead than a pacer reserves: try again later."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class Pacer:
    """At most ``rate`` request starts per second for all tasks that share it.

    The state lives in a ``Record``: in memory for one process, in a file for the
    processes of one machine (``state_file``), or in a blob for every process and
    instance (``record=BlobRecord(...)``). Reservations are one atomic change of that
    record (and a thread lock within the process), so event loops in several threads,
    several processes or several machines share one budget. Slots are kept on the
    wall clock when shared, on the monotonic clock otherwise. Nobody holds anything
    between requests: a process that dies leaves at most the slots it had reserved
    unused.
    """

    def __init__(
        self,
        rate: float = 4.0,
        *,
        state_file: Path | None = None,
        record: Record | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
        key: str = "none",
        ahead: float | None = None,
        late_after: float | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if ahead is not None and ahead < 0:
            raise ValueError("ahead must not be negative")
        self.rate = rate
        self.ahead = ahead
        """How far ahead of now a slot may be taken (None: without bound). A caller
        whose slot would lie further waits without one and asks again, so a process
        that dies holds at most this much of the key's time, and the processes
        sharing a record take the slots as they come free rather than in one queue."""
        self.key = key
        """The API key's label (:func:`key_label`) that telemetry names this budget by."""
        self._interval = 1.0 / rate
        if record is None:
            record = FileRecord(state_file) if state_file is not None else MemoryRecord()
        self._record = record
        shared = not isinstance(record, MemoryRecord)
        self._clock = clock or (wall_clock if shared else time.monotonic)
        self._wall = wall_clock
        self._lock = threading.Lock()
        self.late_after = late_after
        """How late a task may find itself for its slot and still send (None: however
        late); later, it takes a new slot instead, at most RETAKES times."""
        self._not_before = 0.0  # no reservation within reach before this (self._clock)
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self.waits = 0  # how many starts had to wait for their slot
        self.missed = 0  # slots given up because their task ran too late for them

    @property
    def record(self) -> Record:
        """Where the state lives: memory, a file or a blob."""
        return self._record

    async def wait(self) -> None:
        """Wait for this request's slot; raises QuotaExhausted once the quota is gone."""
        for attempt in range(RETAKES + 1):
            async with self._turn():
                slot = await self._take_slot(count=attempt == 0)
            delay = slot - self._clock()
            if delay > 0:
                self.waits += 1
                await asyncio.sleep(delay)
                # The quota may have run out while we waited.
                if self._record.remote:
                    await asyncio.to_thread(self.check_quota)
                else:
                    self.check_quota()
            late = self._clock() - slot
            if self.late_after is None or late <= self.late_after or attempt == RETAKES:
                return
            # This task ran too late for its slot (a busy machine, a slow storage
            # answer): sent now, it could arrive together with the next slot's request.
            self.missed += 1

    def _turn(self) -> asyncio.Lock:
        """The event loop's one place in line for the key's next slot.

        The record keeps no queue: a slot that comes within reach goes to whoever asks
        first. Were every waiting request to ask, a process with eight uploads waiting
        would hold eight chances to one of a run with a single request, and a run just
        started could wait half a minute for its first. So the requests of one event
        loop take their slots one at a time, first come first served (an asyncio.Lock
        is fair), and each loop, each process, asks with one voice.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            turn = self._turns.get(loop)
            if turn is None:
                turn = self._turns[loop] = asyncio.Lock()
        return turn

    async def _take_slot(self, *, count: bool) -> float:
        """Reserve the next free slot within reach; returns when it starts. ``count``:
        the day's count takes the request (a slot taken again for it does not)."""
        lost = 0
        while True:
            try:
                state = await self._reserve_slot(self._reserve(self._wall(), count=count))
                return state.next - self._interval
            except _TooFarAhead as full:
                self.waits += 1
                await asyncio.sleep(full.seconds + self._spread(lost))
                lost += 1

    def _reserve(self, wall: float, *, count: bool = True) -> Callable[[PaceState], PaceState]:
        today = utc_day(wall)
        more = 1 if count else 0

        def reserve(state: PaceState) -> PaceState:
            if state.quota_until and wall < state.quota_until:
                raise self._exhausted(state.quota_until)
            now = self._clock()  # read here, after the record was: its read is not late
            start = max(now, state.next)
            if self.ahead is not None and start - now > self.ahead:
                raise _TooFarAhead(start - now - self.ahead)
            return PaceState(
                start + self._interval, state.quota_until, today, state.used_on(today) + more
            )

        return reserve

    def _spread(self, lost: int) -> float:
        """How long after the slot comes within reach to ask for it: a little random,
        so that the processes of one key do not all ask at the same instant, and less
        the more often this caller has asked in vain, so that the longest waiting asks
        first and nobody loses round after round."""
        return random.uniform(0, self._interval / 2) / (1 + lost)  # noqa: S311 - not a secret

    def hold_off(self, seconds: float) -> None:
        """Push every later start back by at least ``seconds`` (after a 429 throttled)."""
        later = self._clock() + seconds
        self._update(lambda s: replace(s, next=max(s.next, later)))

    def stop_for_the_day(self) -> QuotaExhausted:
        """Record that the daily quota is gone; returns the error every caller gets now."""
        midnight = next_utc_midnight(self._wall())
        until = midnight.timestamp()
        self._update(lambda s: replace(s, quota_until=max(s.quota_until, until)))
        return QuotaExhausted(QUOTA_MESSAGE, resets_at=_iso(midnight))

    def check_quota(self) -> None:
        until = self._read().quota_until
        if until and self._wall() < until:
            raise self._exhausted(until)

    def usage(self) -> Usage:
        """Today's count and any quota stop, as every pacer of this record sees them."""
        state, wall = self._read(), self._wall()
        today = utc_day(wall)
        stopped = state.quota_until if state.quota_until and wall < state.quota_until else 0.0
        until = _iso(datetime.fromtimestamp(stopped, tz=UTC)) if stopped else None
        return Usage(self.key, today, state.used_on(today), until, read_at=wall)

    @staticmethod
    def _exhausted(until: float) -> QuotaExhausted:
        midnight = datetime.fromtimestamp(until, tz=UTC)
        return QuotaExhausted(QUOTA_MESSAGE, resets_at=_iso(midnight))

    # -- the shared state ---------------------------------------------------------------

    def _read(self) -> PaceState:
        return PaceState.parse(self._record.read())

    def _update(
        self, change: Callable[[PaceState], PaceState], *, reserving: bool = False
    ) -> PaceState:
        """Apply ``change`` to the state atomically; returns the new state.

        A reservation (``reserving``) that finds the next slot out of reach tells the
        process's other waiters when to ask again (``_not_before``): until then they
        wait without a storage round trip each (:meth:`_take_slot` adds their spread).
        """
        with self._lock:
            hold = self._not_before - self._clock()
            if hold > 0 and reserving:
                raise _TooFarAhead(hold)
            try:
                raw = self._record.update(lambda old: change(PaceState.parse(old)).encode())
            except _TooFarAhead as full:
                self._not_before = self._clock() + full.seconds
                raise
        return PaceState.parse(raw)

    async def _reserve_slot(self, change: Callable[[PaceState], PaceState]) -> PaceState:
        if self._record.remote:  # a storage round trip: off the event loop
            return await asyncio.to_thread(self._update, change, reserving=True)
        return self._update(change, reserving=True)


_PROCESS_PACERS: dict[tuple[str, str], Pacer] = {}
_PROCESS_LOCK = threading.Lock()


def process_pacer(
    api_key: str,
    rate: float = 4.0,
    *,
    place: str = "memory",
    record: Callable[[], Record] | None = None,
    ahead: float | None = None,
    late_after: float | None = None,
) -> Pacer:
    """The one pacer of this process for an API key and a place its state lives in
    (``place`` names it: "memory", a file's path, a blob's address), made on first use
    with ``record()`` (in memory without one).

    Every client of the process that sends with that key should use it: the limits
    are per key, and a second pacer would double the rate (or, on a shared record,
    race its own process for every slot).
    """
    with _PROCESS_LOCK:
        pacer = _PROCESS_PACERS.get((api_key, place))
        if pacer is None:
            made = record() if record is not None else None
            pacer = Pacer(
                rate, record=made, key=key_label(api_key), ahead=ahead, late_after=late_after
            )
            _PROCESS_PACERS[api_key, place] = pacer
        return pacer
