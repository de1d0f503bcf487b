"""**Confirm removals**: a mirror run that stopped at ``needs_confirmation`` goes ahead.

What ``POST /api/exports/{name}/runs`` with ``{"folder": ..., "confirm_removals": true}``
does, for the run a person is looking at: the same rule (whoever may use the export's
connection: shared.exports.access), the same start (shared.runs.launcher's ``run_now``,
which restarts the run under its own id and reuses what it had prepared).

It confirms only what the person saw: the run's own folder (from the run index), and
only while its files are the ones the run read (the run id is a digest of them). A
folder rewritten since would be another run, whose removals nobody has looked at;
that is refused, and nothing starts.

Also here: the names of the lists a confirmation page shows, asked of the account
(the report has their ids only), and left as ids when the account cannot be asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.errors import CcexportError, InputError
from shared.exports.access import Caller, require_use
from shared.exports.account import AccountAccess, account_lists
from shared.exports.catalog import Catalog
from shared.runs.access import MAX_RUNS
from shared.runs.contract import RunOptions
from shared.runs.index import RunIndex
from shared.runs.launcher import Launcher, RunStart
from shared.segments.inbox import Listing, export_of_run, run_key
from shared.storage.files import BLOB_SCHEME

log = logging.getLogger(__name__)

LIST_NAMES_SECONDS = 5.0
"""How long a confirmation page waits for the account's list names before it shows ids."""


def inbox_path(source: str, inbox: Listing) -> str | None:
    """A run's source (``az://inbox/<path>``, or a path on this machine for serve's
    folder inbox) as a path in ``inbox``; None when it is not in it."""
    if inbox.local_root is not None:
        path = Path(source)
        if not path.is_absolute():
            return None
        resolved = path.resolve()
        if not resolved.is_relative_to(inbox.local_root):
            return None
        return resolved.relative_to(inbox.local_root).as_posix()
    prefix = f"{BLOB_SCHEME}{inbox.name}/"
    return source[len(prefix) :].strip("/") if source.startswith(prefix) else None


async def confirm_removals(
    *,
    run_id: str,
    report: Mapping[str, Any] | None,
    caller: Caller,
    catalog: Catalog,
    runs: RunIndex,
    inbox: Listing,
    launcher: Launcher,
) -> RunStart:
    """Start run ``run_id`` again with ``confirm_removals``; see the module docstring."""
    export = export_of_run(run_id) or ""
    definition = (await catalog.require_export(export)).value
    await require_use(catalog, caller, definition)
    status = (report or {}).get("status")
    if status != "needs_confirmation":
        said = f"it ended {str(status).replace('_', ' ')}" if status else "it has no report yet"
        raise InputError(f"run {run_id} is not waiting for confirmation ({said}); nothing started")
    record = next((r for r in await runs.recent(export, MAX_RUNS) if r.run_id == run_id), None)
    path = inbox_path(record.source, inbox) if record is not None else None
    if path is None:
        raise InputError(
            f"run {run_id}'s folder is no longer among the export's recent runs in the inbox; "
            "nothing started. Start a run of the export on its folder again"
        )
    folder = await inbox.run_folder(path)
    if folder is None or run_key(export, folder) != run_id:
        raise InputError(
            f"the files in {path} changed since run {run_id} read them, so its removals are "
            "not the ones shown; nothing started. The changed folder is a new run: start it "
            "and check what it would remove"
        )
    [started] = await launcher.run_now(
        definition,
        folder_path=path,
        options=RunOptions(confirm_removals=True),
        caller=caller,
    )
    return started


async def list_names(accounts: AccountAccess, connection: str | None) -> dict[str, str]:
    """The account's list names by id; empty when it cannot be asked now (the page then
    shows ids: the confirmation does not depend on the names)."""
    if not connection:
        return {}
    try:
        async with asyncio.timeout(LIST_NAMES_SECONDS), accounts.client(connection) as client:
            return {lst.list_id: lst.name for lst in await account_lists(client)}
    except (CcexportError, TimeoutError) as exc:
        log.info("list names of connection %r not shown: %s", connection, type(exc).__name__)
        return {}
