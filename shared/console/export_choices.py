"""What the export form offers to choose from: the account's lists and custom fields
(read through the connection, from Constant Contact), and the inbox's segments and
their columns (as model.json names them).

Nothing here decides who may use a connection (shared.exports.access does) or what a
definition may say; a connection whose account cannot be read now is not an error
of the page: the form still shows, with the reason in words and a link to the
connection's page, where an admin connects it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.console.wording import Action
from shared.constant_contact.models import ContactList, CustomField
from shared.errors import ConfigError, InputError, ReauthorizationRequired, RemoteError
from shared.exports.access import Caller, usable_connection
from shared.exports.account import AccountAccess, account_custom_fields, account_lists
from shared.exports.catalog import Catalog, ConnectionStatus, NotFound
from shared.exports.definitions import SegmentMatch
from shared.segments.inbox import Listing, RunFolder
from shared.segments.layout import locate
from shared.storage.files import FileStore

Opener = Callable[[str], tuple[FileStore, str]]
"""A run folder's ``source`` (a path here, or ``az://...``) as a store and a name in it:
shared.storage.files.resolve with the app's Blob service."""

MAX_TABLES_READ = 20
"""model.json files read for one form: far more segments than one export names."""


@dataclass(frozen=True)
class Unavailable:
    """Why the account's lists and custom fields cannot be shown, and where to fix it."""

    detail: str
    action: Action | None = None


@dataclass(frozen=True)
class AccountChoices:
    lists: tuple[ContactList, ...] = ()
    custom_fields: tuple[CustomField, ...] = ()
    unavailable: Unavailable | None = None

    def list_label(self, ref: str) -> str:
        """A list reference (a name, or an id) as a person reads it."""
        found = next((lst for lst in self.lists if lst.list_id == ref), None)
        return found.name if found is not None else ref

    def has_list(self, ref: str) -> bool:
        return any(ref in (lst.list_id, lst.name) for lst in self.lists)


async def account_choices(
    catalog: Catalog, accounts: AccountAccess, caller: Caller, connection: str, console: str
) -> AccountChoices:
    """The lists and custom fields of the connection's account, by name; why not, when
    it is not connected or Constant Contact does not answer."""
    if not connection:
        return AccountChoices()
    try:
        stored = await usable_connection(catalog, caller, connection)
    except NotFound:
        why = f"There is no connection named {connection!r} that you may use: choose another."
        return AccountChoices(unavailable=Unavailable(why))
    fix = Action("Open the connection", f"{console}connections/{connection}")
    status = await catalog.status_of(stored.value)
    if status is ConnectionStatus.NOT_CONNECTED:
        why = (
            f"Connection {connection!r} is not connected to a Constant Contact account yet, "
            "so its lists and custom fields cannot be shown. An admin connects it on the "
            "connection's page."
        )
        return AccountChoices(unavailable=Unavailable(why, fix))
    try:
        async with accounts.client(connection) as client:
            lists = await account_lists(client)
            fields = await account_custom_fields(client)
    except ReauthorizationRequired:
        why = (
            f"Connection {connection!r} needs to be reconnected: Constant Contact no longer "
            "accepts its sign-in, so its lists and custom fields cannot be shown. An admin "
            "reconnects it on the connection's page."
        )
        return AccountChoices(unavailable=Unavailable(why, fix))
    except RemoteError:
        why = (
            "Constant Contact did not answer as expected, so the account's lists and custom "
            "fields cannot be shown now. Try again in a few minutes."
        )
        return AccountChoices(unavailable=Unavailable(why))
    return AccountChoices(tuple(lists), tuple(fields))


def stamp_text(stamp: str) -> str:
    """A run folder's ``yyyy/MM/dd/HHmm`` as a time a person reads (UTC, as Customer
    Insights names its folders)."""
    y, m, d, hm = stamp.split("/")
    return f"{y}-{m}-{d} {hm[:2]}:{hm[2:]}"


@dataclass(frozen=True)
class InboxTable:
    """One table (segment) Customer Insights writes into the inbox, by its newest run."""

    newest: RunFolder

    @property
    def segment(self) -> dict[str, str]:
        """The definition's segment for this table: its export and table folder names."""
        return {"export": self.newest.export, "table": self.newest.table}

    @property
    def label(self) -> str:
        return f"{self.newest.export} / {self.newest.table}"

    @property
    def stamp(self) -> str:
        return stamp_text(self.newest.stamp)


@dataclass(frozen=True)
class Column:
    name: str
    everywhere: bool = True
    """In the model.json of every chosen segment (a column missing from one table
    fails that table's runs)."""
    known: bool = True
    """Named by a model.json at all (False: only the saved mapping names it)."""


@dataclass(frozen=True)
class InboxChoices:
    tables: tuple[InboxTable, ...] = ()
    columns: tuple[Column, ...] = ()
    notes: tuple[str, ...] = ()
    """Why some columns could not be read, in words."""


def _tables(folders: Sequence[RunFolder]) -> list[InboxTable]:
    newest: dict[tuple[str, str, str], RunFolder] = {}
    for folder in folders:
        key = (folder.root, folder.export, folder.table)
        if key not in newest or folder.stamp > newest[key].stamp:
            newest[key] = folder
    return [InboxTable(newest[key]) for key in sorted(newest, key=lambda k: (k[1], k[2], k[0]))]


def _matches(table: InboxTable, segments: Sequence[dict[str, str]]) -> bool:
    folder = table.newest
    for segment in segments:
        try:
            match = SegmentMatch(**segment)
        except (ConfigError, TypeError):
            continue
        if match.matches(folder.root, folder.export, folder.table):
            return True
    return False


def _columns_of(open_source: Opener, folder: RunFolder) -> tuple[str, ...] | None:
    """The columns model.json names for a run folder (blocking: reads model.json)."""
    store, name = open_source(folder.source)
    return locate(store, name).columns


async def inbox_choices(
    inbox: Listing,
    open_source: Opener,
    segments: Sequence[dict[str, str]],
    mapped: Sequence[str] = (),
) -> InboxChoices:
    """The inbox's tables, and the columns of the chosen segments' tables (of every
    table, while none is chosen): the union, in model.json's order, each marked when
    some chosen table lacks it; the columns the form maps already come last if no
    model.json names them."""
    folders, _models = await inbox.scan()
    tables = _tables(folders)
    chosen = [t for t in tables if _matches(t, segments)] if segments else tables
    notes: list[str] = []
    if len(chosen) > MAX_TABLES_READ:
        notes.append(f"Columns are shown for the first {MAX_TABLES_READ} segments only.")
        chosen = chosen[:MAX_TABLES_READ]
    per_table: list[tuple[str, ...]] = []
    for table in chosen:
        try:
            columns = await asyncio.to_thread(_columns_of, open_source, table.newest)
        except InputError as exc:
            notes.append(f"The columns of {table.label} cannot be read: {exc}")
            continue
        if columns is None:
            notes.append(
                f"{table.label} has no model.json, so its columns are not known here; "
                "Customer Insights writes one beside its exports."
            )
            continue
        per_table.append(columns)
    names = list(dict.fromkeys(c for columns in per_table for c in columns))
    found = [Column(n, everywhere=all(n in columns for columns in per_table)) for n in names]
    found += [Column(c, everywhere=False, known=False) for c in mapped if c not in names]
    return InboxChoices(tuple(tables), tuple(found), tuple(notes))
