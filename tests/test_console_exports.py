"""The exports pages' parts without a browser: the form read back and the definition
body it asks to save (shared/console/export_form.py), the choices the form offers
from the inbox (export_choices.py), the form's buttons over a catalog in a folder
(export_editing.py), the dry run (export_preview.py) and why a run did not start
(export_runs.py). The pages in a browser: tests/browser/test_console_exports.py."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import orjson
import pytest

from bench.sample import EXPORT, RUN, TABLE, write_sample
from shared.console.export_choices import inbox_choices
from shared.console.export_editing import ExportEditor, FormView, Saved
from shared.console.export_form import (
    ATTRIBUTE_FIELDS,
    NEW,
    Attribute,
    ExportForm,
    attribute_choices,
    segment_value,
)
from shared.console.export_preview import preview_export
from shared.console.export_runs import not_started, start_refused
from shared.console.forms import Form
from shared.errors import ConfigError, InputError, ReauthorizationRequired
from shared.exports import definitions
from shared.exports.access import Caller, Forbidden
from shared.exports.account import AccountAccess
from shared.exports.catalog import Catalog, Connection, PrivacyConsent, Stored
from shared.runs.launcher import NotReady, Outcome, RunStart
from shared.runs.store import LocalRunStore, state_store_for
from shared.segments.inbox import FolderInbox
from shared.storage import files
from shared.storage.documents import DocumentChanged, FolderDocuments

LIST_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CONSOLE = "/api/console/"
ADMIN = Caller("the-admin", frozenset({"admin"}))
SALES = Caller("bob", frozenset({"sales"}))
SEGMENT = {"export": EXPORT, "table": TABLE}


def submitted(*pairs: tuple[str, str]) -> Form:
    return Form.parse(urlencode(list(pairs)).encode())


def filled(**extra: str) -> list[tuple[str, str]]:
    """A whole add form, as the browser sends it."""
    fields = {
        "name": "high-value",
        "connection": "crm",
        "email": "PrimaryEmail",
        "first_name": "FirstName",
        "last_name": "",
        "mode": "add",
        "removal_limit": "20",
        "enabled": "on",
        **extra,
    }
    return [
        *fields.items(),
        ("list", "High value customers"),
        ("list", LIST_ID),
        ("segment", segment_value(SEGMENT)),
        ("attr_field", "city"),
        ("attr_column", "City"),
        ("attr_field", ""),
        ("attr_column", ""),
        ("attr_field", "cf:tier"),
        ("attr_column", "Tier"),
    ]


# --- the form ----------------------------------------------------------------------------


def test_a_filled_form_is_the_body_the_http_api_is_sent() -> None:
    form = ExportForm.parse(submitted(*filled(), ("action", "save")))
    assert form.problems(new=True) == {}
    assert form.attributes == (Attribute("city", "City"), Attribute("cf:tier", "Tier"))
    body = form.body()
    assert body == {
        "connection": "crm",
        "list_ids": ["High value customers", LIST_ID],
        "mapping": {
            "email": "PrimaryEmail",
            "first_name": "FirstName",
            "city": "City",
            "cf:tier": "Tier",
        },
        "segments": [SEGMENT],
        "mode": "add",
        "max_removal_share": 0.2,
        "enabled": True,
        "create_custom_fields": False,
    }
    definition = definitions.from_json({**body, "name": "high-value"})
    assert definition.custom_field_names == ["tier"]


def test_a_saved_definition_fills_the_form_and_comes_back_unchanged() -> None:
    saved = definitions.from_json(
        {
            "name": "high-value",
            "connection": "crm",
            "list_ids": [LIST_ID, "Newsletter"],
            "mapping": {"email": "Mail", "last_name": "Surname", "zip": "PostalCode"},
            "segments": [{"export": "Blob*"}, {"export": EXPORT, "table": TABLE, "prefix": "ci/"}],
            "mode": "mirror",
            "max_removal_share": 0.125,
            "enabled": False,
            "create_custom_fields": True,
            "max_profiles": 5000,
            "encoding": "cp1252",
            "description": "kept though the form does not show it",
        }
    )
    form = ExportForm.of(Stored(saved, '"etag-1"'))
    assert (form.email, form.first_name, form.last_name) == ("Mail", "", "Surname")
    assert form.attributes == (Attribute("zip", "PostalCode"),)
    assert form.removal_limit == "12.5"
    assert form.etag == '"etag-1"'
    again = definitions.from_json({**form.body(), "name": "high-value"})
    assert again == saved


@pytest.mark.parametrize(
    ("typed", "share"),
    [("20", 0.2), ("12,5", 0.125), ("5 %", 0.05), ("0", 0.0), ("abc", None), ("nan", None)],
)
def test_the_removal_limit_is_a_percent(typed: str, share: float | None) -> None:
    assert ExportForm(removal_limit=typed).removal_share() == share


def test_what_is_left_unfilled_is_said_next_to_its_control() -> None:
    form = ExportForm.parse(
        submitted(
            ("name", "High Value!"),
            ("removal_limit", "lots"),
            ("attr_field", "city"),
            ("attr_column", ""),
            ("attr_field", "first_name"),
            ("attr_column", "FirstName"),
        )
    )
    found = form.problems(new=True)
    assert set(found) == {
        "name", "connection", "lists", "email", "attr_field_1", "attr_field_2", "removal_limit",
    }  # fmt: skip
    assert found["email"] == "Choose the column that holds the email address: Email is required."
    assert "choose both its field and its column" in found["attr_field_1"]
    assert found["attr_field_2"] == "Attribute 2: First name is chosen already, in Data matching."
    assert "name" not in form.problems(new=False)  # an edit's name is its page's


def test_the_mappings_own_rule_speaks_for_data_matching() -> None:
    phones = [("phone", "A"), ("home_phone", "B"), ("work_phone", "C"), ("mobile_phone", "D")]
    pairs = [
        p for field, column in phones for p in (("attr_field", field), ("attr_column", column))
    ]
    form = ExportForm.parse(submitted(*filled(), *pairs))
    assert form.problems(new=True) == {
        "matching": "Data matching: 4 phone fields mapped; Constant Contact takes at most 3."
    }
    twice = ExportForm.parse(submitted(*filled(), ("attr_field", "city"), ("attr_column", "X")))
    assert twice.problems(new=True) == {
        "attr_field_3": "Attribute 3: City is chosen already, in attribute 1."
    }


def test_add_attribute_offers_every_field_the_mapping_takes_and_the_accounts_custom_fields() -> (
    None
):
    assert "email" not in ATTRIBUTE_FIELDS
    assert {"job_title", "home_street2", "birthday", "birthday_month"} <= set(ATTRIBUTE_FIELDS)
    pair = {"birthday_month": "M", "birthday_day": "D"}  # taken together only
    for target in ATTRIBUTE_FIELDS:  # every one is a field the mapping accepts
        mapping = {"email": "E", **(pair if target in pair else {target: "X"})}
        definitions.from_json({"list_ids": [LIST_ID], "mapping": mapping})
    options = dict(
        attribute_choices([("tier", "Tier")], [Attribute("cf:gone", "G"), Attribute("city", "C")])
    )
    assert options["cf:tier"] == "Custom field: Tier (cf:tier)"
    assert options["cf:gone"] == "Custom field gone (not in the account yet)"
    assert options["home_street2"] == "Home street2"


# --- the inbox's choices ---------------------------------------------------------------------


def other_export(inbox: Path) -> None:
    """A second export whose one table has other columns."""
    folder = inbox / "Other" / "Buyers" / "2026" / "01" / "02" / "0300"
    folder.mkdir(parents=True)
    (folder / "Buyers_1.csv").write_text("x@example.com,1\n", encoding="utf-8")
    model = {"entities": [{"name": "Buyers", "attributes": [{"name": "Email"}, {"name": "Id"}]}]}
    (inbox / "Other" / "model.json").write_bytes(orjson.dumps(model))


async def test_segments_and_columns_come_from_the_inbox_and_model_json(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_sample(inbox, 10)
    other_export(inbox)
    listing = FolderInbox(inbox)

    def opener(source: str) -> tuple[files.FileStore, str]:
        return files.resolve(source, None)

    every = await inbox_choices(listing, opener, [])
    assert [t.label for t in every.tables] == [f"{EXPORT} / {TABLE}", "Other / Buyers"]
    assert every.tables[0].stamp == "2026-11-28 09:30"
    assert every.tables[0].segment == SEGMENT
    names = [c.name for c in every.columns]
    assert names[:2] == ["CustomerId", "PrimaryEmail"]
    assert names[-2:] == ["Email", "Id"]
    assert not any(c.everywhere for c in every.columns)  # no column is in both tables

    chosen = await inbox_choices(listing, opener, [SEGMENT], ["PrimaryEmail", "Gone"])
    assert [c.name for c in chosen.columns] == [
        "CustomerId", "PrimaryEmail", "FirstName", "LastName", "City", "PostalCode",
        "PrimaryPhone", "Tier", "Gone",
    ]  # fmt: skip
    assert all(c.everywhere for c in chosen.columns[:-1])
    assert not chosen.columns[-1].known
    patterned = await inbox_choices(listing, opener, [{"export": "Oth*"}])
    assert [c.name for c in patterned.columns] == ["Email", "Id"]

    (inbox / "Other" / "model.json").write_text("{not json", encoding="utf-8")
    broken = await inbox_choices(listing, opener, [{"export": "Other"}])
    assert broken.columns == ()
    assert broken.notes[0].startswith("The columns of Other / Buyers cannot be read: ")


# --- the form's buttons over a catalog ----------------------------------------------------------


class NoAccount:
    """An AccountAccess for a connection that was never connected."""

    @asynccontextmanager
    async def client(self, connection: str) -> AsyncIterator[Any]:
        if connection:
            raise ReauthorizationRequired(connection, "no tokens are stored for it")
        yield None


@pytest.fixture
async def catalog(tmp_path: Path) -> Catalog:
    made = Catalog(FolderDocuments(tmp_path / "catalog"))
    crm = Connection("crm", "CRM", ("marketing",), PrivacyConsent("the-admin", "2026-01-01"))
    await made.save_connection(replace(crm, id="c0ffee"))
    return made


def editor(catalog: Catalog, tmp_path: Path, caller: Caller = ADMIN) -> ExportEditor:
    inbox = tmp_path / "inbox"
    if not inbox.exists():
        write_sample(inbox, 10)
    return ExportEditor(
        catalog,
        cast(AccountAccess, NoAccount()),
        FolderInbox(inbox),
        lambda source: files.resolve(source, None),
        caller,
        CONSOLE,
    )


async def test_save_creates_once_and_says_why_not_otherwise(
    catalog: Catalog, tmp_path: Path
) -> None:
    pages = editor(catalog, tmp_path)
    blank = await pages.blank()
    assert blank.connection == "crm"
    shown = await pages.view(blank, new=True)
    assert shown.account.unavailable is not None
    assert "is not connected to a Constant Contact account yet" in shown.account.unavailable.detail
    assert [o.label for o in shown.segment_options] == [f"{EXPORT} / {TABLE}"]

    saved = await pages.submit(NEW, submitted(*filled(), ("action", "save")))
    assert saved == Saved("high-value")
    stored = await catalog.require_export("high-value")
    assert stored.value.connection_id == "c0ffee"  # definition_to_save recorded it
    assert stored.value.list_ids == ("High value customers", LIST_ID)

    again = await pages.submit(NEW, submitted(*filled(), ("action", "save")))
    assert isinstance(again, FormView)
    assert again.status == 409
    assert again.errors["name"].startswith("An export named 'high-value' exists already")

    elsewhere = submitted(*filled(name="other", connection="nope"), ("action", "save"))
    refused = await pages.submit(NEW, elsewhere)
    assert isinstance(refused, FormView)
    assert (refused.status, refused.problem) == (
        400,
        "export definition: connection 'nope' does not exist "
        "(an admin creates it with PUT /api/connections/{name})",
    )
    assert await catalog.export("other") is None


async def test_buttons_that_do_not_save_keep_what_was_typed(
    catalog: Catalog, tmp_path: Path
) -> None:
    pages = editor(catalog, tmp_path)
    more = await pages.submit(NEW, submitted(*filled(), ("action", "add_attribute")))
    assert isinstance(more, FormView)
    assert more.form.attributes[-1] == Attribute()
    assert more.form.email == "PrimaryEmail"
    made = await pages.submit(
        NEW, submitted(*filled(), ("new_list", "Fresh"), ("action", "new_list"))
    )
    assert isinstance(made, FormView)
    assert made.status == 409
    assert made.errors["new_list"].startswith("New list: connection 'crm' must be connected")
    spaced = submitted(*filled(), ("new_field", "no spaces"), ("action", "new_field"))
    field = await pages.submit(NEW, spaced)
    assert isinstance(field, FormView)
    assert "1-50 letters, digits or underscores" in field.errors["new_field"]
    assert await catalog.export("high-value") is None


async def test_an_edit_needs_the_etag_it_was_read_with(catalog: Catalog, tmp_path: Path) -> None:
    pages = editor(catalog, tmp_path)
    assert await pages.submit(NEW, submitted(*filled(), ("action", "save"))) == Saved("high-value")
    form = await pages.opened("high-value")
    stored = await catalog.require_export("high-value")
    await catalog.save_export(replace(stored.value, enabled=False), stored.etag)
    sent = [*filled(name="ignored", etag=form.etag), ("action", "save")]
    with pytest.raises(DocumentChanged, match="changed or deleted by someone else"):
        await pages.submit("high-value", submitted(*sent))
    fresh = await pages.opened("high-value")
    edited = [*filled(etag=fresh.etag, mode="mirror", removal_limit="5"), ("action", "save")]
    assert await pages.submit("high-value", submitted(*edited)) == Saved("high-value")
    value = (await catalog.require_export("high-value")).value
    assert (value.mode, value.max_removal_share) == ("mirror", 0.05)


async def test_a_contributor_of_another_role_reaches_neither_the_export_nor_the_connection(
    catalog: Catalog, tmp_path: Path
) -> None:
    await editor(catalog, tmp_path).submit(NEW, submitted(*filled(), ("action", "save")))
    theirs = editor(catalog, tmp_path, SALES)
    assert (await theirs.blank("crm")).connection == ""
    with pytest.raises(Forbidden):
        await theirs.opened("high-value")
    with pytest.raises(Forbidden):
        await theirs.submit("high-value", submitted(*filled(), ("action", "refresh")))
    with pytest.raises(Forbidden):
        await theirs.submit(NEW, submitted(*filled(name="mine"), ("action", "save")))


# --- Preview ---------------------------------------------------------------------------------


async def test_preview_counts_what_run_now_would_read_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = tmp_path / "inbox"
    counts = write_sample(inbox, 300, bad_every=30, duplicate_every=25)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    definition = definitions.from_json(
        {
            "name": "high-value",
            "connection": "crm",
            "list_ids": [LIST_ID],
            "mapping": {"email": "PrimaryEmail"},
            "segments": [SEGMENT],
            "mode": "mirror",
        }
    )
    arguments: dict[str, Any] = {
        "inbox": FolderInbox(inbox),
        "open_source": lambda source: files.resolve(source, None),
        "states": state_store_for(LocalRunStore(tmp_path / "runs")),
        "accounts": cast(AccountAccess, NoAccount()),
        "now": datetime.now(UTC),
        "quiet_seconds": 0,
    }
    found = await preview_export(definition, **arguments)
    (folder,) = found.folders
    assert folder.title == f"{EXPORT} / {TABLE}, exported 2026-11-28 09:30 UTC"
    summary = folder.summary
    assert (summary.rows_read, summary.contacts, summary.duplicates, summary.rejected) == (
        counts.rows, counts.contacts, counts.duplicates, counts.bad,
    )  # fmt: skip
    assert [(r.code, r.words, r.count) for r in folder.reasons] == [
        ("invalid_email", "not an email address", counts.bad)
    ]
    assert folder.changes is not None
    assert folder.changes["sent"] == counts.contacts
    assert folder.changes["removal_candidates"] == 0
    assert found.not_compared is None
    assert list(scratch.iterdir()) == []  # the temporary folder is gone

    by_name = replace(definition, list_ids=("High value customers",))
    unread = await preview_export(by_name, **arguments)
    assert unread.not_compared is not None
    assert "needs to be connected again" in unread.not_compared
    assert unread.folders[0].changes is None
    assert unread.folders[0].summary.contacts == counts.contacts

    with pytest.raises(ConfigError, match="has no segments"):
        await preview_export(replace(definition, segments=()), **arguments)
    shutil.rmtree(inbox / EXPORT / TABLE / RUN)
    with pytest.raises(ConfigError, match="no complete run folder"):
        await preview_export(definition, **arguments)


# --- Run now's refusals ------------------------------------------------------------------------


def test_a_run_that_did_not_start_links_to_the_page_that_fixes_it() -> None:
    definition = definitions.from_json(
        {
            "name": "high-value",
            "connection": "crm",
            "list_ids": [LIST_ID],
            "mapping": {"email": "E"},
        }
    )
    refused = start_refused(NotReady("connection 'crm' is not connected"), definition, CONSOLE)
    assert refused.problem.status == 409
    assert refused.problem.action is not None
    assert refused.problem.action.href == "/api/console/connections/crm"
    to_fix = start_refused(InputError("no list named 'x'"), definition, CONSOLE).problem
    assert (to_fix.status, to_fix.detail) == (400, "no list named 'x'")
    assert to_fix.action is not None
    assert to_fix.action.href == "/api/console/exports/high-value"
    run_id = "high-value." + "0" * 32
    running = not_started(RunStart(run_id, Outcome.RUNNING, "high-value", "src"), CONSOLE)
    assert not running.send_again
    assert running.problem.action is not None
    assert running.problem.action.href == f"/api/console/runs/{run_id}"
    done = not_started(RunStart(run_id, Outcome.DONE, "high-value", "src"), CONSOLE)
    assert done.send_again
    assert "already sent these files" in done.problem.detail
