"""Rate limits and the daily quota, per API key (client_id), as the service applies them.

- 4 requests/second per API key: excess requests get 429 ``throttled``.
- 10,000 requests/day per API key, reset at 00:00:00 UTC: excess get 429
  ``quota_exceeded`` until then.
- The token endpoint: 1 request/second.

A throttled or quota-exceeded request does not count against the quota (the docs do
not say; this keeps a client's retries from consuming the day's budget).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from sandbox import wire

SECONDS_KEPT = 3600
"""How many of the last seconds ``Limits.per_second`` keeps per key."""


REFUSALS_KEPT = 100
"""How many throttled requests' windows ``Limits.refusals`` keeps."""


class RateWindow:
    """At most ``limit`` events per key in any sliding one-second window (0: unlimited)."""

    def __init__(self, limit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        if self.limit <= 0:
            return True
        now = self.clock()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - 1.0:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def ages(self, key: str) -> list[float]:
        """How long ago (seconds) each event still in ``key``'s window happened."""
        now = self.clock()
        return [round(now - t, 3) for t in self._events.get(key, ())]

    def reset(self) -> None:
        self._events.clear()


class DailyQuota:
    """``limit`` requests per key per UTC day (0: unlimited)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._day = self._today()
        self.used: dict[str, int] = {}

    def _today(self) -> int:
        return int(self.clock() // 86_400)

    def take(self, key: str) -> bool:
        today = self._today()
        if today != self._day:  # 00:00:00 UTC: a new day, a new budget
            self._day = today
            self.used.clear()
        used = self.used.get(key, 0)
        if self.limit > 0 and used >= self.limit:
            return False
        self.used[key] = used + 1
        return True

    def reset(self) -> None:
        self.used.clear()


@dataclass
class Limits:
    """The limits of one sandbox and how often each was hit."""

    api: RateWindow
    quota: DailyQuota
    token: RateWindow
    hits: dict[str, int] = field(default_factory=lambda: {"throttled": 0, "quota_exceeded": 0})
    span: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per key, when the first and the last request it let through arrived (wall clock):
    a benchmark's busy span."""
    per_second: dict[str, dict[int, int]] = field(default_factory=dict)
    """Per key, the requests let through in each second of the wall clock (the last
    ``SECONDS_KEPT``): a benchmark's busiest window, whatever its ramp up and down."""
    in_flight: dict[str, int] = field(default_factory=dict)
    """Per key, the requests let through and not yet answered: from the moment the
    limits let one in (its headers read) until its handler returns, so an upload's
    body arriving and its parse both count."""
    in_flight_peak: dict[str, int] = field(default_factory=dict)
    """Per key, the most requests it was handling at once (a high-water mark): what
    the key's clients together had in flight, which the 4/s rate alone does not bound
    when requests are slow."""

    refusals: list[dict[str, object]] = field(default_factory=list)
    """For each request throttled (the last ``REFUSALS_KEPT``), when (``at``, wall
    clock) and how long before it the requests in its window arrived (``window``): how
    closely the requests it came after bunched."""

    @classmethod
    def create(cls, per_second: float, daily: int, token_per_second: float) -> Limits:
        return cls(RateWindow(per_second), DailyQuota(daily), RateWindow(token_per_second))

    def check_api(self, client_id: str) -> web.Response | None:
        """None when the request may proceed, else the 429 to answer."""
        if not self.api.allow(client_id):
            self.hits["throttled"] += 1
            refusal = {"at": time.time(), "window": self.api.ages(client_id)}
            self.refusals = [*self.refusals[-REFUSALS_KEPT + 1 :], refusal]
            return wire.throttled()
        if not self.quota.take(client_id):
            self.hits["quota_exceeded"] += 1
            return wire.quota_exceeded()
        now = time.time()
        self.span[client_id] = (self.span.get(client_id, (now, now))[0], now)
        seconds = self.per_second.setdefault(client_id, {})
        second = int(now)
        seconds[second] = seconds.get(second, 0) + 1
        if len(seconds) > SECONDS_KEPT:
            for old in [s for s in seconds if s <= second - SECONDS_KEPT]:
                del seconds[old]
        return None

    def enter(self, client_id: str) -> None:
        """A request of ``client_id`` let through starts being handled."""
        now = self.in_flight.get(client_id, 0) + 1
        self.in_flight[client_id] = now
        self.in_flight_peak[client_id] = max(self.in_flight_peak.get(client_id, 0), now)

    def leave(self, client_id: str) -> None:
        """A request :meth:`enter` counted has its answer (or was cut off)."""
        self.in_flight[client_id] = max(self.in_flight.get(client_id, 0) - 1, 0)

    def reset_peaks(self) -> None:
        """Start a new high-water mark from the requests in flight now."""
        self.in_flight_peak = {key: n for key, n in self.in_flight.items() if n}

    def check_token(self, client_id: str) -> web.Response | None:
        if not self.token.allow(client_id):
            self.hits["throttled"] += 1
            return wire.throttled()
        return None
