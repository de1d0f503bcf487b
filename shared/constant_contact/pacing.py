"""How fast, and whether at all, requests may go to one API key.

Constant Contact counts 4 requests/s and 10,000 a day per API key, for every worker
together. A ``Pacer`` is shared by everything in a process that talks to one key:
it spaces request starts at most ``rate`` per second (a token bucket holding one
token, so there is no burst the server could see as five in one second), lets a
throttled caller push everyone back, and, once the daily quota is gone, refuses
every further request until the quota resets instead of letting each task find out
with a request of its own.

With a ``state_file`` the same budget holds across processes on one machine (every
``ccexport`` command sharing a CCEXPORT_HOME): the next free slot and the quota stop
live in a small file updated under ``flock``, so 24 commands started at once still
send at 4/s instead of finding the limit by 429s.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.errors import QuotaExhausted

QUOTA_MESSAGE = "daily quota exhausted, resumes after 00:00 UTC"


PACING_MARGIN = 0.8
"""Requests start at 80 % of the allowed rate. Constant Contact counts 4 per sliding
second where the requests arrive, and they arrive bunched by network and server
delays: starts spaced exactly at the limit had imports answered 429 (and sent again),
and at 90 % some still were. The little time a fifth under the limit costs is less
than those resends cost."""


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


class Pacer:
    """At most ``rate`` request starts per second for all tasks that share it.

    Reservations are taken under a thread lock (and the file's flock when shared),
    so event loops in several threads, or several processes, share one budget.
    Slots are kept on the wall clock when shared between processes, on the
    monotonic clock otherwise.
    """

    def __init__(
        self,
        rate: float = 4.0,
        *,
        state_file: Path | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
        key: str = "none",
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.key = key
        """The API key's label (:func:`key_label`) that telemetry names this budget by."""
        self._interval = 1.0 / rate
        self._file = state_file
        self._clock = clock or (wall_clock if state_file is not None else time.monotonic)
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._next = 0.0  # in memory; the file holds it when shared
        self._stopped_until = 0.0  # wall clock
        self.waits = 0  # how many starts had to wait for their slot

    async def wait(self) -> None:
        """Wait for this request's slot; raises QuotaExhausted once the quota is gone."""
        self.check_quota()
        now = self._clock()
        slot = self._update(lambda nxt, _q: (max(now, nxt) + self._interval, None))
        slot -= self._interval
        if slot > now:
            self.waits += 1
            await asyncio.sleep(slot - now)
        self.check_quota()  # the quota may have run out while we waited

    def hold_off(self, seconds: float) -> None:
        """Push every later start back by at least ``seconds`` (after a 429 throttled)."""
        later = self._clock() + seconds
        self._update(lambda nxt, _q: (max(nxt, later), None))

    def stop_for_the_day(self) -> QuotaExhausted:
        """Record that the daily quota is gone; returns the error every caller gets now."""
        midnight = next_utc_midnight(self._wall())
        until = midnight.timestamp()
        self._update(lambda nxt, q: (nxt, max(q, until)))
        return QuotaExhausted(QUOTA_MESSAGE, resets_at=_iso(midnight))

    def check_quota(self) -> None:
        until = self._quota_until()
        if until and self._wall() < until:
            midnight = datetime.fromtimestamp(until, tz=UTC)
            raise QuotaExhausted(QUOTA_MESSAGE, resets_at=_iso(midnight))

    # -- state: in memory, or in the shared file --------------------------------------

    def _quota_until(self) -> float:
        if self._file is None:
            return self._stopped_until
        return self._read_file()[1]

    def _update(self, change: Callable[[float, float], tuple[float, float | None]]) -> float:
        """Apply ``change(next, quota_until)`` atomically; returns the new next slot."""
        with self._lock:
            if self._file is None:
                self._next, quota = change(self._next, self._stopped_until)
                if quota is not None:
                    self._stopped_until = quota
                return self._next
            return self._update_file(change)

    def _open(self) -> int:
        assert self._file is not None
        self._file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(self._file, os.O_RDWR | os.O_CREAT, 0o600)

    @staticmethod
    def _parse(raw: bytes) -> tuple[float, float]:
        try:
            doc = json.loads(raw)
            return float(doc["next"]), float(doc["quota_until"])
        except (ValueError, KeyError, TypeError):
            return 0.0, 0.0  # empty or torn by a crash: start afresh

    def _read_file(self) -> tuple[float, float]:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # held for microseconds by any writer
            return self._parse(os.pread(fd, 256, 0))
        finally:
            os.close(fd)  # closing releases the flock

    def _update_file(self, change: Callable[[float, float], tuple[float, float | None]]) -> float:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            nxt, quota = self._parse(os.pread(fd, 256, 0))
            nxt, new_quota = change(nxt, quota)
            data = json.dumps(
                {"next": nxt, "quota_until": quota if new_quota is None else new_quota}
            )
            os.ftruncate(fd, 0)
            os.pwrite(fd, data.encode(), 0)
            return nxt
        finally:
            os.close(fd)


_PROCESS_PACERS: dict[str, Pacer] = {}
_PROCESS_LOCK = threading.Lock()


def process_pacer(api_key: str, rate: float = 4.0) -> Pacer:
    """The one in-memory pacer of this process for an API key, made on first use.

    Every client of the process that sends with that key should use it: the limits
    are per key, and a second pacer would double the rate.
    """
    with _PROCESS_LOCK:
        pacer = _PROCESS_PACERS.get(api_key)
        if pacer is None:
            pacer = _PROCESS_PACERS[api_key] = Pacer(rate, key=key_label(api_key))
        return pacer
