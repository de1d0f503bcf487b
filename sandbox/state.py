"""The one object that holds a running sandbox's parts; the routes reach it through the app.

All of it lives in memory (the sandbox persists nothing): stopping the process ends
the account, its contacts, lists, activities and tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sandbox.activities import ActivityQueue, Pace
from sandbox.config import SandboxConfig
from sandbox.faults import Faults
from sandbox.limits import Limits
from sandbox.loop_lag import LoopLag
from sandbox.oauth import OAuthServer
from sandbox.stats import RequestStats
from sandbox.store import Store


@dataclass
class Sandbox:
    config: SandboxConfig
    store: Store
    activities: ActivityQueue
    oauth: OAuthServer
    limits: Limits
    faults: Faults
    stats: RequestStats
    clock: Callable[[], float] = time.time
    counters: dict[str, int] = field(default_factory=lambda: {"dropped_contacts": 0})
    imports: dict[str, ImportedBody] = field(default_factory=dict)
    """Every accepted import request body by its SHA-256: how often the same bytes came."""
    loop_lag: LoopLag = field(default_factory=LoopLag)
    """How long its event loop, which stamps arrivals on the rate window, was held up."""

    @classmethod
    def create(cls, config: SandboxConfig) -> Sandbox:
        faults = Faults(config.seed)
        faults.update(config.faults)
        return cls(
            config=config,
            store=Store(),
            activities=ActivityQueue(
                Pace(config.activity_delay, config.items_per_second), config.max_queued_activities
            ),
            oauth=OAuthServer(
                config.client_id,
                config.client_secret,
                rotating=config.rotating_refresh_tokens,
                access_ttl=config.access_token_ttl,
                refresh_ttl=config.refresh_token_ttl,
                code_ttl=config.auth_code_ttl,
                redirect_uris=config.redirect_uris,
            ),
            limits=Limits.create(
                config.requests_per_second, config.daily_quota, config.token_requests_per_second
            ),
            faults=faults,
            stats=RequestStats(),
        )

    def settings(self) -> dict[str, Any]:
        """The settings that ``POST /__sandbox/settings`` may change."""
        return {
            "requests_per_second": self.limits.api.limit,
            "daily_quota": self.limits.quota.limit,
            "token_requests_per_second": self.limits.token.limit,
            "max_queued_activities": self.activities.max_queued,
            "activity_delay": self.activities.pace.delay,
            "items_per_second": self.activities.pace.items_per_second,
            "access_token_ttl": self.oauth.access_ttl,
            "rotating_refresh_tokens": self.oauth.rotating,
        }


@dataclass
class ImportedBody:
    """One import request body (by digest): its lists and the activities it started.

    Lets a test say "no chunk was imported more than twice" without reading bodies.
    """

    list_ids: list[str]
    activity_ids: list[str] = field(default_factory=list)


SANDBOX = web.AppKey("sandbox", Sandbox)


def sandbox_of(request: web.Request) -> Sandbox:
    return request.app[SANDBOX]
