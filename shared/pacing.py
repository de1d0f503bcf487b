"""How fast, and whether at all, a process may send requests to one API key.

Constant Contact counts 4 requests/s and 10,000 a day per API key, for every worker
together. A ``Pacer`` is shared by everything in a process that talks to one key:
it spaces request starts at most ``rate`` per second (a token bucket holding one
token, so there is no burst the server could see as five in one second), lets a
throttled caller push everyone back, and, once the daily quota is gone, refuses
every further request until the quota resets instead of letting each task find out
with a request of its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared.errors import QuotaExhausted

QUOTA_MESSAGE = "daily quota exhausted, resumes after 00:00 UTC"


def next_utc_midnight(now: float | None = None) -> datetime:
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    return (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


class Pacer:
    """At most ``rate`` request starts per second for all tasks that share it.

    Reservations are taken under a thread lock, so event loops in several threads
    (as the Functions worker may run) still share one budget.
    """

    def __init__(
        self,
        rate: float = 4.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._interval = 1.0 / rate
        self._clock = clock
        self._wall = wall_clock
        self._next = 0.0
        self._lock = threading.Lock()
        self._stopped: QuotaExhausted | None = None
        self._stopped_until = 0.0
        self.waits = 0  # how many starts had to wait for their slot

    async def wait(self) -> None:
        """Wait for this request's slot; raises QuotaExhausted once the quota is gone."""
        self.check_quota()
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self._interval
        if slot > now:
            self.waits += 1
            await asyncio.sleep(slot - now)
        self.check_quota()  # the quota may have run out while we waited

    def hold_off(self, seconds: float) -> None:
        """Push every later start back by at least ``seconds`` (after a 429 throttled)."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)

    def stop_for_the_day(self) -> QuotaExhausted:
        """Record that the daily quota is gone; returns the error every caller gets now."""
        midnight = next_utc_midnight(self._wall())
        error = QuotaExhausted(QUOTA_MESSAGE, resets_at=midnight.isoformat().replace("+00:00", "Z"))
        with self._lock:
            self._stopped = error
            self._stopped_until = midnight.timestamp()
        return error

    def check_quota(self) -> None:
        stopped = self._stopped
        if stopped is None:
            return
        if self._wall() >= self._stopped_until:
            self._stopped = None  # a new UTC day, a new budget
            return
        raise QuotaExhausted(str(stopped), resets_at=stopped.resets_at)
