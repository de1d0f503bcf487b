"""Injected faults: what goes wrong, how often, and how many times.

Each fault has a ``rate`` (probability per request or per import, 0..1) and an
optional ``count`` (how many more times it may fire; ``null`` = no limit), so a test
can say "the next two requests get 503" as easily as "10 % of requests do". Two more
settings make a fault certain to reach the run a test watches:

- ``by`` (``null`` = off): if the dice let the first ``by - 1`` chances since the fault
  was set pass, the ``by``-th gets it, whatever the seed; then only the dice again
  (``{"rate": 0.1, "by": 3}``: 10 % of requests, and one of the first three);
- ``authorization`` (``null`` = everyone): only requests made with that authorization's
  tokens are chances (its id: ``GET /__sandbox/authorization?token=``, sandbox/stats.py).

| name             | effect                                                          |
|------------------|-----------------------------------------------------------------|
| http_500         | a /v3 request is answered 500 (the documented error array)      |
| http_503         | a /v3 request is answered 503                                   |
| reset            | the connection is reset (TCP RST); ``after: true`` resets after |
|                  | the request was carried out, so its effect happened unseen      |
| latency          | ``seconds`` are added before a /v3 request is handled           |
| import_failed    | a new import activity ends ``failed`` (nothing applied)         |
| import_timed_out | a new import activity ends ``timed_out`` (nothing applied)      |
| import_short     | a new import activity completes without its last contact: not   |
|                  | applied, not in person_count, counted correctable (refused)     |
| token_error      | the token endpoint answers ``status`` (503 by default)          |
"""

from __future__ import annotations

import random
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

NAMES = (
    "http_500", "http_503", "reset", "latency", "import_failed", "import_timed_out", "token_error",
    "import_short",
)  # fmt: skip


class FaultError(ValueError):
    """A fault setting that makes no sense; the message says which."""


@dataclass
class Fault:
    rate: float = 0.0
    count: int | None = None
    seconds: float = 0.0  # latency only
    after: bool = False  # reset only
    status: int = 503  # token_error only
    by: int | None = None  # one of the first ``by`` chances fires, at the latest the last
    authorization: str | None = None  # only this authorization's requests are chances


@dataclass
class Handling:
    """The request being handled: whose it is (the authorization of its token, if the
    sandbox knows it) and the faults fired for it. Set by the request stats
    (sandbox/stats.py) for each request, read here when a fault is rolled."""

    authorization: str | None = None
    fired: list[str] = field(default_factory=list)


HANDLING: ContextVar[Handling | None] = ContextVar("sandbox_handling", default=None)


class Faults:
    """The fault settings of one sandbox, the dice, and how often each fault fired."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - fault dice, not security
        self.settings: dict[str, Fault] = {name: Fault() for name in NAMES}
        self.fired: dict[str, int] = dict.fromkeys(NAMES, 0)
        self._chances: dict[str, int] = dict.fromkeys(NAMES, 0)  # since the fault was set
        self._hits: dict[str, int] = dict.fromkeys(NAMES, 0)

    def fire(self, name: str) -> bool:
        """Roll for one fault; True (and counted) when it happens now."""
        fault = self.settings[name]
        if (fault.rate <= 0 and fault.by is None) or fault.count == 0:
            return False
        handling = HANDLING.get()
        if fault.authorization is not None and (
            handling is None or handling.authorization != fault.authorization
        ):
            return False  # not a chance: another client's request
        hit = self._rng.random() < fault.rate if 0 < fault.rate < 1 else fault.rate >= 1
        self._chances[name] += 1
        if not hit and fault.by is not None:
            hit = self._hits[name] == 0 and self._chances[name] >= fault.by
        if not hit:
            return False
        self._hits[name] += 1
        if fault.count is not None:
            fault.count -= 1
        self.fired[name] += 1
        if handling is not None:
            handling.fired.append(name)
        return True

    def update(self, changes: dict[str, Any]) -> None:
        """Merge new settings, e.g. ``{"http_503": {"rate": 1, "count": 2}}``.

        A bare number is taken as the rate. Validates everything before changing anything.
        """
        staged = {name: Fault(**asdict(fault)) for name, fault in self.settings.items()}
        for name, value in changes.items():
            if name not in staged:
                raise FaultError(f"unknown fault {name!r}; known: {', '.join(NAMES)}")
            spec = {"rate": value} if isinstance(value, int | float) else value
            if not isinstance(spec, dict):
                raise FaultError(f"fault {name!r} must be an object or a rate")
            fault = staged[name]
            for key, item in spec.items():
                if key not in _SETTINGS:
                    raise FaultError(f"fault {name!r} has no setting {key!r}")
                setattr(fault, key, item)
            _check(name, fault)
        self.settings = staged
        for name in changes:
            self._chances[name] = self._hits[name] = 0

    def clear(self) -> None:
        self.settings = {name: Fault() for name in NAMES}
        self._chances, self._hits = dict.fromkeys(NAMES, 0), dict.fromkeys(NAMES, 0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "settings": {name: asdict(fault) for name, fault in self.settings.items()},
            "fired": dict(self.fired),
        }


_SETTINGS = frozenset({"rate", "count", "seconds", "after", "status", "by", "authorization"})


def _check(name: str, fault: Fault) -> None:
    if isinstance(fault.rate, bool) or not isinstance(fault.rate, int | float):
        raise FaultError(f"{name}.rate must be a number")
    if not 0 <= fault.rate <= 1:
        raise FaultError(f"{name}.rate must be between 0 and 1")
    if fault.count is not None and (not isinstance(fault.count, int) or fault.count < 0):
        raise FaultError(f"{name}.count must be a non-negative integer or null")
    if not isinstance(fault.seconds, int | float) or not 0 <= fault.seconds <= 600:
        raise FaultError(f"{name}.seconds must be between 0 and 600")
    if not isinstance(fault.after, bool):
        raise FaultError(f"{name}.after must be true or false")
    if fault.status not in {500, 502, 503, 504}:
        raise FaultError(f"{name}.status must be 500, 502, 503 or 504")
    if fault.by is not None and (
        isinstance(fault.by, bool) or not isinstance(fault.by, int) or fault.by < 1
    ):
        raise FaultError(f"{name}.by must be a positive integer or null")
    if fault.authorization is not None and (
        not isinstance(fault.authorization, str) or not fault.authorization
    ):
        raise FaultError(f"{name}.authorization must be an authorization id or null")
