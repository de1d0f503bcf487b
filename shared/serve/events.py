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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.segments import MODEL_FILE

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


class InboxEvents:
    """Raises ``on_created(name)`` for each new or changed file of the inbox."""

    def __init__(
        self,
        listing: Listing,
        on_created: Callable[[str], Awaitable[None]],
        *,
        interval: float,
        settle: bool,
    ) -> None:
        self._listing = listing
        self._on_created = on_created
        self.interval = interval
        self.settle = settle
        self._raised: dict[str, str] = {}
        self._seen: dict[str, str] = {}

    async def prime(self) -> int:
        """Take what is in the inbox now as already announced; returns how many files."""
        self._raised = dict(await self._listing())
        self._seen = dict(self._raised)
        return len(self._raised)

    async def poll(self) -> list[str]:
        """One listing: raise the events it shows; returns the names raised."""
        now = await self._listing()
        due: list[str] = []
        for name, etag in now.items():
            if self._raised.get(name) == etag:
                continue
            if self.settle and self._seen.get(name) != etag:
                continue  # still changing, or seen for the first time: next listing
            due.append(name)
        self._seen = dict(now)
        self._raised = {n: e for n, e in self._raised.items() if n in now}
        due.sort(key=lambda name: (name.rpartition("/")[2] == MODEL_FILE, name))
        for name in due:
            self._raised[name] = now[name]
            try:
                await self._on_created(name)
            except Exception:
                log.exception("inbox event for a file failed; it is not raised again")
        return due

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                try:
                    await self.poll()
                except Exception:
                    log.exception("listing the inbox failed; trying again")
