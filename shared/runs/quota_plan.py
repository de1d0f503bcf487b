"""The daily quota, planned: what a run weighs before it sends, and what it found.

Constant Contact grants an API key a number of requests a day (``CTCT_DAILY_QUOTA``),
for every run and command together; the pacer counts them in the key's shared record
(shared/constant_contact/pacing.py). A run that starts sending when what is left
cannot carry it stops half-way, its imports cut off or unconfirmed. So before a run
sends, the orchestrator estimates its requests (:class:`RequestEstimate`, made by
shared/runs/estimate.py), asks the ``quota_left`` activity for the key's day
(:class:`KeyDay`), and when what is left is less than the estimate still needs, waits
on a durable timer for the reset, asks again, and then sends. :class:`QuotaPlan` is
what it decided, carried in its tally and written in the report beside the requests
the run actually made, so how far off the estimate was can be read from every report.

Plain data, JSON both ways, no clock: the orchestrator rebuilds all of it on replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class RequestEstimate:
    """The requests a run is expected to make, by kind (an upper bound but for resends:
    shared/runs/estimate.py says how each part is told)."""

    members: int = 0
    """Mirror mode: the requests that read the lists' members, already made when the
    estimate is told (counted so the total compares with the run's own total)."""
    imports: int = 0
    status_polls: int = 0
    """Requests of the imports' status polls."""
    removals: int = 0
    """Mirror mode: membership removal requests."""
    removal_polls: int = 0
    """Requests of the removals' status polls."""

    @property
    def total(self) -> int:
        return self.members + self.imports + self.status_polls + self.removals + self.removal_polls

    @property
    def still_needed(self) -> int:
        """What the key's day must still carry: all but the reads already made."""
        return self.total - self.members

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RequestEstimate:
        return cls(**{k: int(data.get(k, 0)) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class KeyDay:
    """``quota_left``'s result: the API key's UTC day as its shared pacing record counts
    it (every process and run of the key together)."""

    day: str
    """The UTC day, YYYY-MM-DD, on the clock of the process that read the record."""
    used: int
    limit: int
    """CTCT_DAILY_QUOTA."""
    left: int
    """``limit - used``, 0 when the quota is stopped (Constant Contact said it ran out)."""
    resets_at: str
    """The next 00:00 UTC after ``day`` (or the end of a quota stop), ISO 8601."""
    resets_in: float
    """Seconds from the read to ``resets_at``, on the clock that read the record: the
    orchestrator's timer is this long, so it waits the reset out whatever its own
    clock says (and a test can give the pacer a clock near midnight)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyDay:
        return cls(
            day=str(data["day"]),
            used=int(data["used"]),
            limit=int(data["limit"]),
            left=int(data["left"]),
            resets_at=str(data["resets_at"]),
            resets_in=float(data["resets_in"]),
        )


@dataclass(frozen=True)
class QuotaPlan:
    """What a run decided about the key's day before it sent."""

    estimate: RequestEstimate
    key_day: KeyDay | None = None
    """The last answer of ``quota_left`` (None until asked, or when it could not be read)."""
    waits: int = 0
    """Resets the run waited for."""
    resumes_at: str | None = None
    """When the run's timer fires (ISO 8601, UTC) while it waits for the reset."""
    waited_since: str | None = None
    """When the run first found the day too short (ISO 8601), if it did."""
    error: str | None = None
    """Why the key's day could not be read; the run then sent without the check (the
    pacer still stops every request once Constant Contact says the quota is gone)."""

    def carried_by(self, day: KeyDay) -> bool:
        """Whether ``day`` can carry the run. A run whose estimate is more than a whole
        day's quota goes at once: no reset would make room for it, so waiting only
        delays it (it ends ``quota_exhausted`` and is resumed as before)."""
        need = self.estimate.still_needed
        return need > day.limit or day.left >= need

    def more_than_a_day(self) -> bool:
        day = self.key_day
        return day is not None and self.estimate.still_needed > day.limit

    def checked(self, day: KeyDay) -> QuotaPlan:
        return replace(self, key_day=day)

    def to_json(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate.to_json(),
            "key_day": None if self.key_day is None else self.key_day.to_json(),
            "waits": self.waits,
            "resumes_at": self.resumes_at,
            "waited_since": self.waited_since,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> QuotaPlan | None:
        if not data:
            return None
        day = data.get("key_day")
        return cls(
            estimate=RequestEstimate.from_json(data["estimate"]),
            key_day=None if day is None else KeyDay.from_json(day),
            waits=int(data.get("waits", 0)),
            resumes_at=data.get("resumes_at"),
            waited_since=data.get("waited_since"),
            error=data.get("error"),
        )
