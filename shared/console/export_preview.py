"""Preview: the dry run of an export, before anything is sent.

It reads what Run now would read (the newest complete run folder of each table the
export's segments match: shared.runs.launcher.newest_folders) through the same
prepare pipeline as ``ccexport prepare`` and a run's prepare step
(shared/prepare/pipeline.py), into a temporary folder that is deleted afterwards, and
compares it with the export's last snapshot as a run would. The page shows counts
only: rows read, contacts, duplicates, rejects by reason, what is new, changed or
unchanged, and in mirror mode who left the segment. Never a row, never an address.

Nothing is sent: Constant Contact is asked at most for the account's lists, when the
definition names lists by name, because the snapshot is kept under list ids. How
many members a mirror run removes needs the lists' members, which only a run reads
(in bulk, before it sends): the preview says how many members this export added have
left the segment, the most a run would plan to remove.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.console.export_choices import Opener, stamp_text
from shared.console.wording import REASONS
from shared.constant_contact.connections import DEFAULT_CONNECTION
from shared.errors import InputError, ReauthorizationRequired, RemoteError
from shared.exports.account import AccountAccess, resolve_lists
from shared.exports.definitions import ExportDefinition, list_names
from shared.exports.state import StateStore
from shared.prepare.outputs import LocalOutput
from shared.prepare.pipeline import prepare
from shared.prepare.summary import PrepareSummary
from shared.runs.launcher import newest_folders, require_segments
from shared.runs.next_state import baseline, changes_json
from shared.segments.inbox import Listing, RunFolder
from shared.segments.layout import locate


@dataclass(frozen=True)
class Reason:
    code: str
    words: str
    count: int


@dataclass(frozen=True)
class FolderPreview:
    """What prepare made of one run folder."""

    folder: RunFolder
    summary: PrepareSummary

    @property
    def title(self) -> str:
        """The segment and when Customer Insights exported it (its folder's name, UTC)."""
        when = stamp_text(self.folder.stamp)
        return f"{self.folder.export} / {self.folder.table}, exported {when} UTC"

    @property
    def reasons(self) -> list[Reason]:
        return [
            Reason(code, REASONS.get(code, code.replace("_", " ")), count)
            for code, count in sorted(self.summary.reject_reasons.items())
        ]

    @property
    def changes(self) -> Mapping[str, Any] | None:
        return self.summary.changes

    @property
    def truncated(self) -> int:
        read = self.summary.read
        return sum(read.truncated.values()) if read else 0

    @property
    def invalid_values(self) -> int:
        read = self.summary.read
        return sum(read.invalid_values.values()) if read else 0


@dataclass(frozen=True)
class Preview:
    export: ExportDefinition
    folders: tuple[FolderPreview, ...]
    not_compared: str | None = None
    """Why the folders were not compared with the last run, in words."""
    refused: str | None = None
    """What would stop Run now before it sends (an unknown list name)."""


async def lists_as_ids(accounts: AccountAccess, definition: ExportDefinition) -> ExportDefinition:
    """The definition with its list names resolved against the account, as a run's
    start does (shared/exports/account.py); the snapshot is kept under list ids."""
    if not list_names(definition.list_ids):
        return definition
    connection = definition.connection or DEFAULT_CONNECTION
    async with accounts.client(connection) as client:
        lists, _names = await resolve_lists(client, definition.list_ids, connection=connection)
    return replace(definition, list_ids=tuple(lst.list_id for lst in lists))


def _prepare_one(
    folder: RunFolder, export: ExportDefinition, open_source: Opener, states: StateStore | None
) -> FolderPreview:
    """Prepare one run folder into a temporary folder, deleted before this returns."""
    store, name = open_source(folder.source)
    segment = locate(store, name, encoding=export.encoding)
    with tempfile.TemporaryDirectory(prefix="ccexport-preview-") as scratch:
        output = LocalOutput(Path(scratch))
        if states is None:
            result = prepare(segment, export, output, fast=True)
        else:
            base = baseline(states, export, segment)
            tracker = base.tracker()
            result = prepare(
                segment,
                export,
                output,
                fast=True,
                changes=tracker,
                describe_changes=lambda counts: changes_json(base, counts, tracker.keys),
            )
    return FolderPreview(folder, result.prepared)


async def preview_export(
    definition: ExportDefinition,
    *,
    inbox: Listing,
    open_source: Opener,
    states: StateStore,
    accounts: AccountAccess,
    now: datetime,
    quiet_seconds: float,
) -> Preview:
    """Prepare what Run now would read, sending nothing. ConfigError when the export
    has no segments or no complete run folder yet (as Run now); InputError for a file
    prepare cannot read (as a run's prepare step)."""
    require_segments(definition)
    folders = await newest_folders(inbox, definition, now, quiet_seconds)
    export, not_compared, refused = definition, None, None
    try:
        export = await lists_as_ids(accounts, definition)
    except InputError as exc:
        refused = str(exc)
        not_compared = "the export's lists are not all in the account (see above)."
    except ReauthorizationRequired as exc:
        not_compared = (
            f"the account's lists could not be read (connection {exc.connection!r} needs "
            "to be connected again), and the last run is kept under their ids."
        )
    except RemoteError:
        not_compared = (
            "Constant Contact did not answer as expected when asked for the account's lists, "
            "and the last run is kept under their ids."
        )
    states_or_none = states if not_compared is None else None
    found = [
        await asyncio.to_thread(_prepare_one, folder, export, open_source, states_or_none)
        for folder in folders
    ]
    return Preview(definition, tuple(found), not_compared, refused)
