"""Adding and editing an export in the console: the form's choices, and what each of its
buttons does.

Without JavaScript every button posts the whole form and the page comes back with
what was typed: **Add attribute** adds a row, **Create list** makes a list in the
account (as ``POST /api/connections/{name}/lists``), **Create custom field** one
custom field, **Update lists and columns** reads the account and the chosen segments'
model.json again, and **Save** saves. Only Save changes the catalog, and it starts
nothing.

The rules are the HTTP API's: who may use which export and connection is
shared.exports.access's, a definition to save is checked by
shared.exports.editing.definition_to_save (with the ETag the form was filled from,
so nobody's change is overwritten unseen).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from shared.console.export_choices import (
    AccountChoices,
    InboxChoices,
    Opener,
    account_choices,
    inbox_choices,
)
from shared.console.export_form import (
    NEW,
    Attribute,
    ExportForm,
    attribute_choices,
    segment_of,
    segment_value,
)
from shared.console.forms import Form
from shared.constant_contact.contacts import CUSTOM_PREFIX, EMAIL, validate_mapping
from shared.errors import InputError, ReauthorizationRequired, RemoteError
from shared.exports.access import Caller, usable_connection, usable_connections, usable_export
from shared.exports.account import AccountAccess, ensure_custom_fields, new_list_name
from shared.exports.catalog import Catalog, Connection, Stored
from shared.exports.definitions import ExportDefinition
from shared.exports.editing import definition_to_save
from shared.segments.inbox import Listing
from shared.storage.documents import DocumentChanged, DocumentExists

SAVED = "Saved. Saving does not run the export: Run now sends it."


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    hint: str = ""


@dataclass(frozen=True)
class FormView:
    """Everything the export form page shows."""

    form: ExportForm
    new: bool
    connections: tuple[Connection, ...]
    account: AccountChoices
    inbox: InboxChoices
    errors: Mapping[str, str] = field(default_factory=dict)
    """What to fix, by the id of the control it is about."""
    problem: str | None = None
    """Why the definition cannot be saved, in the definition check's own words."""
    notice: str | None = None
    status: int = 200

    @property
    def list_options(self) -> list[Option]:
        """The account's lists by name, and any list the form holds that it lacks."""
        chosen = set(self.form.lists)
        options = []
        for lst in self.account.lists:
            value = lst.list_id if lst.list_id in chosen else lst.name
            members = "" if lst.membership_count is None else f"{lst.membership_count:,} members"
            options.append(Option(value, lst.name, members))
        for ref in self.form.lists:
            if not self.account.has_list(ref):
                hint = "" if self.account.unavailable else "not in the account"
                options.append(Option(ref, self.account.list_label(ref), hint))
        return options

    @property
    def segment_options(self) -> list[Option]:
        """The inbox's tables, and any segment the form holds that none of them is."""
        options = [
            Option(segment_value(t.segment), t.label, f"newest export {t.stamp} UTC")
            for t in self.inbox.tables
        ]
        seen = {o.value for o in options}
        for value in self.form.segments:
            segment = segment_of(value)
            if value in seen or segment is None:
                continue
            table = segment.get("table") or "every table"
            label = f"{segment.get('export', '')} / {table}"
            if segment.get("prefix"):
                label += f" (under {segment['prefix']})"
            options.append(Option(value, label, "no export of it in the inbox now"))
        return options

    @property
    def column_options(self) -> list[Option]:
        options = []
        for column in self.inbox.columns:
            hint = ""
            if not column.known:
                hint = "not in model.json"
            elif not column.everywhere:
                hint = "not in every chosen segment"
            options.append(Option(column.name, column.name, hint))
        return options

    @property
    def field_options(self) -> list[Option]:
        custom = [(f.name, f.label) for f in self.account.custom_fields]
        return [Option(v, label) for v, label in attribute_choices(custom, self.form.attributes)]


@dataclass(frozen=True)
class Saved:
    """The definition was saved under ``name``."""

    name: str


class ExportEditor:
    """The export form's actions for one caller."""

    def __init__(  # noqa: PLR0917 - what one page works with
        self,
        catalog: Catalog,
        accounts: AccountAccess,
        inbox: Listing,
        open_source: Opener,
        caller: Caller,
        console: str,
    ) -> None:
        self.catalog = catalog
        self.accounts = accounts
        self.inbox = inbox
        self.open_source = open_source
        self.caller = caller
        self.console = console

    async def _connections(self) -> tuple[Connection, ...]:
        found = await usable_connections(self.catalog, self.caller)
        return tuple(sorted((s.value for s in found), key=lambda c: c.name))

    async def blank(self, connection: str = "") -> ExportForm:
        """A new export's form: on the connection asked for if the caller may use it,
        else on the first they may."""
        names = [c.name for c in await self._connections()]
        chosen = connection if connection in names else (names[0] if names else "")
        return ExportForm(connection=chosen)

    async def opened(self, name: str) -> ExportForm:
        """A saved export's form (403 or 404 as the HTTP API answers its GET)."""
        return ExportForm.of(await usable_export(self.catalog, self.caller, name))

    async def view(
        self,
        form: ExportForm,
        *,
        new: bool,
        errors: Mapping[str, str] | None = None,
        problem: str | None = None,
        notice: str | None = None,
        status: int = 200,
    ) -> FormView:
        account = await account_choices(
            self.catalog, self.accounts, self.caller, form.connection, self.console
        )
        inbox = await inbox_choices(
            self.inbox, self.open_source, form.chosen_segments, form.mapped_columns
        )
        return FormView(
            form, new, await self._connections(), account, inbox,
            dict(errors or {}), problem, notice, status,
        )  # fmt: skip

    async def submit(self, route_name: str, submitted: Form) -> FormView | Saved:
        """What a button of the form asks (``action``): see the module docstring."""
        new = route_name == NEW
        existing: Stored[ExportDefinition] | None = None
        form = ExportForm.parse(submitted)
        if not new:
            existing = await usable_export(self.catalog, self.caller, route_name)
            form = replace(form, name=route_name, kept=ExportForm.of(existing).kept)
        action = submitted.get("action")
        if action == "add_attribute":
            return await self.view(form.with_attribute(), new=new)
        if action == "new_list":
            return await self._new_list(form, new)
        if action == "new_field":
            return await self._new_field(form, new)
        if action == "save":
            return await self._save(form, new, existing)
        return await self.view(form, new=new)

    async def _new_list(self, form: ExportForm, new: bool) -> FormView:
        """Create a list by name in the connection's account, or find the one of that
        name, and choose it."""
        try:
            if not form.new_list:
                raise InputError("type the new list's name first")
            name = new_list_name(form.new_list)
            connection = await self._usable(form)
            async with self.accounts.client(connection) as client:
                made, created = await client.create_or_find_list(name)
        except (InputError, ReauthorizationRequired, RemoteError) as exc:
            errors = {"new_list": f"New list: {_account_error(exc)}"}
            return await self.view(form, new=new, errors=errors, status=_status(exc))
        done = "created in the account" if created else "is in the account already"
        return await self.view(
            form.with_list(made.name), new=new, notice=f"List {made.name!r} {done}, and chosen."
        )

    async def _new_field(self, form: ExportForm, new: bool) -> FormView:
        """Create a custom field (a text field, named as typed) in the account, or find
        it, and add an attribute row for it."""
        name = form.new_field
        try:
            if not name:
                raise InputError("type the new custom field's name first")
            validate_mapping({EMAIL: "-", f"{CUSTOM_PREFIX}{name}": "-"})
            connection = await self._usable(form)
            async with self.accounts.client(connection) as client:
                _, created = await ensure_custom_fields(
                    client, [name], connection=connection, create=True
                )
        except (InputError, ReauthorizationRequired, RemoteError) as exc:
            errors = {"new_field": f"New custom field: {_account_error(exc)}"}
            return await self.view(form, new=new, errors=errors, status=_status(exc))
        done = "created in the account" if created else "is in the account already"
        row = Attribute(f"{CUSTOM_PREFIX}{name}", "")
        notice = f"Custom field {name!r} {done}; choose the column it takes below."
        return await self.view(form.with_attribute(row), new=new, notice=notice)

    async def _usable(self, form: ExportForm) -> str:
        if not form.connection:
            raise InputError("choose the connection first")
        await usable_connection(self.catalog, self.caller, form.connection)
        return form.connection

    async def _save(
        self, form: ExportForm, new: bool, existing: Stored[ExportDefinition] | None
    ) -> FormView | Saved:
        errors = form.problems(new=new)
        if errors:
            return await self.view(form, new=new, errors=errors, status=400)
        name, etag = form.name, form.etag or None
        if new:
            existing = await self.catalog.export(name)
        try:
            definition = await definition_to_save(
                self.catalog, self.caller, name, form.body(), existing=existing, if_match=etag
            )
            await self.catalog.save_export(definition, etag)
        except DocumentExists:
            taken = {
                "name": f"An export named {name!r} exists already: choose another name, or "
                "open it from Exports to change it."
            }
            return await self.view(form, new=new, errors=taken, status=409)
        except DocumentChanged:
            raise DocumentChanged(
                f"export {name!r} was changed or deleted by someone else since this page "
                "was opened. Reload it to see what it holds now, then make your changes again."
            ) from None
        except InputError as exc:  # ConfigError among them
            return await self.view(form, new=new, problem=str(exc), status=400)
        return Saved(name)


def _account_error(exc: Exception) -> str:
    if isinstance(exc, ReauthorizationRequired):
        return (
            f"connection {exc.connection!r} must be connected again before anything can be "
            "made in its account (on the connection's page)."
        )
    if isinstance(exc, RemoteError):
        return f"Constant Contact refused it: {exc}"
    return f"{str(exc).rstrip('.')}."


def _status(exc: Exception) -> int:
    if isinstance(exc, InputError):
        return 400
    return 409 if isinstance(exc, ReauthorizationRequired) else 502
