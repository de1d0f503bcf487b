"""Proof that a fault reached THIS run, from both ends.

The sandbox's end: each fault run connects with tokens of its own (one authorization,
``/__sandbox/tokens``), every fault is aimed at that authorization, and afterwards the
sandbox says what the requests made with its tokens met: faults fired, answers by
status ("reset" for those cut off), 429 ``throttled``
(``GET /__sandbox/authorization?token=``, sandbox/stats.py). Other clients of the same
sandbox (the throttling bursts) have an authorization of their own and count apart.

The run's end: :class:`CountingActivities` is the run's own ``RunActivities`` that also
keeps every Constant Contact client, OAuth client and token manager it made, so a test
can add up what the run's clients did about the faults (requests, retries, throttled
answers, import POSTs sent again, token requests against refreshes obtained).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.oauth import OAuthClient
from shared.constant_contact.tokens import TokenManager
from shared.constant_contact.transport import ClientStats
from shared.runs.activities import RunActivities, RunServices
from shared.runs.grants import RunScope
from tests.support.sandbox_service import RunningSandbox


@dataclass
class Tally:
    """What the clients of every round of one run did (filled while the run goes)."""

    clients: list[ClientStats] = field(default_factory=list)
    oauth: list[OAuthClient] = field(default_factory=list)
    managers: list[TokenManager] = field(default_factory=list)

    def client(self) -> Counter[str]:
        """The run's Constant Contact clients, added up (ClientStats' fields)."""
        total: Counter[str] = Counter()
        for stats in self.clients:
            total.update(asdict(stats))
        return total

    @property
    def token_requests(self) -> int:
        """Requests the run sent to the token endpoint, failed ones included."""
        return sum(client.requests for client in self.oauth)

    @property
    def refreshes(self) -> int:
        """Refreshes the run obtained (each one token request that succeeded)."""
        return sum(manager.refreshes for manager in self.managers)


class CountingActivities(RunActivities):
    """The run's activities, keeping the clients they make in a :class:`Tally`."""

    def __init__(self, services: RunServices, tally: Tally) -> None:
        super().__init__(services)
        self.tally = tally

    async def _tokens(self, connection: str, version: str) -> TokenManager:
        manager = await super()._tokens(connection, version)
        if not any(known is manager for known in self.tally.managers):
            self.tally.managers.append(manager)
        if self._connections is not None and not any(
            known is self._connections.oauth for known in self.tally.oauth
        ):
            self.tally.oauth.append(self._connections.oauth)
        return manager

    async def _client(self, connection: str, scope: RunScope | None) -> ConstantContactClient:
        client = await super()._client(connection, scope)
        self.tally.clients.append(client.stats)
        return client


@dataclass(frozen=True)
class Met:
    """What the sandbox saw of one authorization's requests."""

    authorization: str
    requests: Mapping[str, Mapping[str, int]]
    faults: Mapping[str, int]
    throttled: int

    def answered(self, status: str, templates: Iterable[str] | None = None) -> int:
        """API (``/v3``) requests, or those of ``templates``, answered (or cut off:
        ``"reset"``) with ``status``."""
        wanted = None if templates is None else set(templates)
        return sum(
            codes.get(status, 0)
            for key, codes in self.requests.items()
            if (" /v3/" in key if wanted is None else key in wanted)
        )

    def api_attempts(self) -> int:
        """API (``/v3``) requests that reached the sandbox, whatever came of them."""
        return sum(sum(codes.values()) for key, codes in self.requests.items() if " /v3/" in key)


def met(sandbox: RunningSandbox, token: str) -> Met:
    """What the requests of the authorization ``token`` belongs to met, so far."""
    found: dict[str, Any] = sandbox.control("GET", f"authorization?token={quote(token, safe='')}")
    return Met(
        str(found["authorization"]), found["requests"], found["faults"], int(found["throttled"])
    )


def aimed(authorization: str, **faults: Any) -> dict[str, Any]:
    """Fault settings (``/__sandbox/faults``) that only this authorization's requests meet."""
    return {
        name: {**({"rate": spec} if isinstance(spec, int | float) else spec),
               "authorization": authorization}
        for name, spec in faults.items()
    }  # fmt: skip
