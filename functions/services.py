"""What the triggers and the HTTP API work with, built by shared.wiring.

Settings are parsed into one ``Config`` and every client comes from shared.wiring, as
the activities' do. The clients are opened once per event loop and settings and
reused by every invocation after (one connection pool, one managed-identity token);
``ccexport serve`` closes them when it stops.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df

from shared.config import Config
from shared.constant_contact.connect import Connections
from shared.exports.account import AccountAccess
from shared.exports.catalog import Catalog
from shared.runs.contract import ORCHESTRATOR
from shared.runs.index import RunIndex
from shared.runs.launcher import Launcher
from shared.secrets.store import SecretStore
from shared.segments.inbox import FolderInbox, Inbox, Listing
from shared.storage.locks import BlobLeaseLocks, FileLocks, Locks
from shared.wiring import clients, stores


class DurableEngine:
    """The Durable Functions client as the engine shared.runs.launcher starts runs on."""

    def __init__(self, client: df.DurableOrchestrationClient) -> None:
        self.client = client

    async def runtime_status(self, run_id: str) -> str | None:
        status = await self.client.get_status(run_id)
        runtime = status.runtime_status if status else None
        return None if runtime is None else str(runtime.value)

    async def start(self, run_id: str, run_input: dict[str, Any]) -> None:
        await self.client.start_new(ORCHESTRATOR, run_id, run_input)

    async def output(self, run_id: str) -> Mapping[str, Any] | None:
        status = await self.client.get_status(run_id)
        output = status.output if status else None
        return output if isinstance(output, Mapping) else None


@dataclass
class Services:
    config: Config
    secrets: SecretStore
    catalog: Catalog
    inbox: Listing
    runs: RunIndex
    locks: Locks
    """One token refresh at a time per connection, across instances."""

    def launcher(self, client: df.DurableOrchestrationClient) -> Launcher:
        return Launcher(
            self.catalog,
            self.inbox,
            self.runs,
            DurableEngine(client),
            quiet_seconds=self.config.app.quiet_seconds,
            preflight=self.accounts().preflight,
            poll_seconds=self.config.app.poll_seconds,
        )

    def accounts(self) -> AccountAccess:
        """Constant Contact clients for the connections: their lists and custom fields,
        and the look at the account before a run starts (list names, custom fields)."""
        return clients.account_access(self.config, self.secrets, self.locks)

    async def connections(self) -> Connections:
        """The OAuth side: tokens in the secret store, one refresh at a time by lease."""
        tokens = clients.token_pacer(self.config)
        return await clients.connections(self.config.ctct, self.secrets, self.locks, tokens)()

    def read_report(self, run_id: str) -> dict[str, Any] | None:
        """The finished run's report from the run store (blocking: call in a thread)."""
        return stores.run_store(self.config).read_report(run_id)


async def _open(settings: Mapping[str, str], stack: AsyncExitStack) -> Services:
    """Every client an invocation may use, their closing pushed on ``stack``."""
    config = Config.from_mapping(settings)
    app = config.app
    secrets = clients.secret_store(config)
    stack.push_async_callback(secrets.close)
    if app.is_local:
        assert app.local_inbox is not None  # is_local
        documents = clients.catalog_documents(config)
        inbox: Listing = FolderInbox(app.local_inbox)
        locks: Locks = FileLocks(app.home)
    else:
        blob, credential = stores.async_blob_service(config)
        stack.push_async_callback(blob.close)
        if credential is not None:
            stack.push_async_callback(credential.close)
        exports = blob.get_container_client(app.exports_container)
        documents = clients.catalog_documents(config, exports)
        inbox = Inbox(blob.get_container_client(app.inbox_container))
        locks = BlobLeaseLocks(exports)
    return Services(
        config=config,
        secrets=secrets,
        catalog=Catalog(documents, secrets),
        inbox=inbox,
        runs=RunIndex(documents),
        locks=locks,
    )


_opened: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[frozenset[tuple[str, str]], tuple[Services, AsyncExitStack]]
] = weakref.WeakKeyDictionary()
"""The services each event loop's invocations share, by the settings they were made from.

An aio client belongs to the loop that made it, so they are kept per loop: the
Functions worker runs every async invocation on one loop, and reuses its clients (one
connection pool, one managed-identity token) for as long as the process lives."""


@asynccontextmanager
async def services(env: Mapping[str, str] | None = None) -> AsyncIterator[Services]:
    """Everything one invocation needs: opened by the first invocation on this event
    loop with these settings, reused by the next ones, closed by :func:`close_services`.

    With no storage connection but ``CCEXPORT_LOCAL_INBOX`` (``ccexport serve`` on one
    machine), the same services are folders under CCEXPORT_HOME: definitions,
    connections and run records as files, file locks, the inbox a local folder.
    """
    settings = dict(os.environ) if env is None else dict(env)
    key = frozenset(settings.items())
    on_loop = _opened.setdefault(asyncio.get_running_loop(), {})
    found = on_loop.get(key)
    if found is None:
        stack = AsyncExitStack()
        try:
            made = await _open(settings, stack)
        except BaseException:
            await stack.aclose()
            raise
        found = on_loop.setdefault(key, (made, stack))
        if found[1] is not stack:  # another invocation opened them meanwhile
            await stack.aclose()
    yield found[0]


async def close_services() -> None:
    """Close the clients opened on this event loop (``ccexport serve``'s stop, tests)."""
    on_loop = _opened.pop(asyncio.get_running_loop(), {})
    for _services, stack in on_loop.values():
        await stack.aclose()
