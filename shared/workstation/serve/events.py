"""Blob events for the inbox, as Event Grid raises them for the blob trigger.

Event Grid tells the app about every blob committed in the inbox container. serve
lists the inbox (a folder, or the container when a storage connection is set) every
``interval`` seconds and raises an event for each file that is new or changed since
the last listing. Files already there when serve starts raise none: Event Grid does
not replay the past either (the timer, or ``POST /api/exports/{name}/runs``, takes
them).

A blob is committed whole, but a file in a folder is visible while it is being
written: a file in a folder raises its event once it is the same on two listings in
a row. In one listing's events, parts come before model.json, as Customer Insights
writes them; the trigger decides from a fresh listing whatever the order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.errors import CcexportError
from shared.segments.layout import MODEL_FILE

log = logging.getLogger("ccexport.serve")

Listing = Callable[[], Awaitable[dict[str, str]]]
"""Every file of the inbox: name → ETag."""


@dataclass(frozen=True)
class InboxBlob:
    """What the blob trigger reads of its ``BlobClient`` binding: the blob's address.

    The trigger binds an SDK-type ``BlobClient`` that the host builds from the event;
    it uses only the name (it never reads the content), so serve passes the address.
    """

    blob_name: str
    container_name: str


RETRIES = 5
"""Attempts after the first for an event whose trigger failed, as Event Grid retries."""


@dataclass
class _Failed:
    etag: str
    attempts: int
    next_at: float


class InboxEvents:
    """Raises ``on_created(name)`` for each new or changed file of the inbox.

    A trigger that fails is tried again on later listings, with backoff, up to
    ``RETRIES`` more times (Event Grid delivers again too); expected errors are logged
    as one line. Listings come at ``interval`` seconds, or five times as long as the
    last listing took, so a large inbox does not keep a core busy.
    """

    def __init__(
        self,
        listing: Listing,
        on_created: Callable[[str], Awaitable[None]],
        *,
        interval: float,
        settle: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listing = listing
        self._on_created = on_created
        self.interval = interval
        self.settle = settle
        self._clock = clock
        self._raised: dict[str, str] = {}
        self._seen: dict[str, str] = {}
        self._failed: dict[str, _Failed] = {}
        self._pause = interval

    async def prime(self) -> int:
        """Take what is in the inbox now as already announced; returns how many files."""
        self._raised = dict(await self._listing())
        self._seen = dict(self._raised)
        return len(self._raised)

    def _due(self, name: str, etag: str) -> bool:
        if self._raised.get(name) == etag:
            return False
        failed = self._failed.get(name)
        if failed is not None and failed.etag == etag:
            return self._clock() >= failed.next_at
        # A folder's file is raised once it is the same on two listings in a row.
        return not self.settle or self._seen.get(name) == etag

    async def poll(self) -> list[str]:
        """One listing: raise the events it shows; returns the names raised."""
        began = self._clock()
        now = await self._listing()
        self._pause = max(self.interval, 5 * (self._clock() - began))
        due = [name for name, etag in now.items() if self._due(name, etag)]
        self._seen = dict(now)
        self._raised = {n: e for n, e in self._raised.items() if n in now}
        self._failed = {n: f for n, f in self._failed.items() if now.get(n) == f.etag}
        due.sort(key=lambda name: (name.rpartition("/")[2] == MODEL_FILE, name))
        for name in due:
            self._raised[name] = now[name]
            try:
                await self._on_created(name)
            except Exception as exc:
                self._retry_later(name, now[name], exc)
            else:
                self._failed.pop(name, None)
        return due

    def _retry_later(self, name: str, etag: str, exc: Exception) -> None:
        previous = self._failed.get(name)
        attempts = previous.attempts + 1 if previous is not None else 1
        why = str(exc) if isinstance(exc, CcexportError) else type(exc).__name__
        if attempts > RETRIES:
            log.error(
                "inbox event for %r failed %d times; not raised again: %r", name, attempts, why
            )
            self._failed.pop(name, None)
            return
        if not isinstance(exc, CcexportError):
            log.error("inbox event for %r failed", name, exc_info=exc)
        delay = self.interval * 2**attempts
        log.warning("inbox event for %r failed (%r); trying again in %.0f s", name, why, delay)
        self._raised.pop(name, None)
        self._failed[name] = _Failed(etag, attempts, self._clock() + delay)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self._pause)
            except TimeoutError:
                try:
                    await self.poll()
                except Exception as exc:
                    why = str(exc) if isinstance(exc, CcexportError) else type(exc).__name__
                    log.warning("listing the inbox failed (%s); trying again", why)
