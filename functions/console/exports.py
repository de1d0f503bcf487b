"""The console's exports pages (see functions/console/pages.py for the page helper):
the list, the add and edit form, Run now, Preview and Delete.

Thin, as the HTTP API's routes are: the form and its buttons are
shared/console/export_editing.py, the dry run shared/console/export_preview.py, the
words of a run that did not start shared/console/export_runs.py. Who may do what is
shared.exports.access's, as for ``/api/exports``: every page here is for the
connection's users, and an export whose connection is not the caller's is answered
403 (404 when there is none), as its API route is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import azure.durable_functions as df

from functions.console.pages import Answer, Page, Redirect, Visit, console_path, page
from functions.http_api.routes import CONNECTION_ROLES
from functions.http_api.runs import run_status
from functions.services import Services
from shared.console.export_choices import Opener
from shared.console.export_editing import SAVED, ExportEditor, FormView, Saved
from shared.console.export_form import NEW, percent_text
from shared.console.export_preview import preview_export
from shared.console.export_runs import Refusal, first_started, not_started, start_refused
from shared.console.overview import overview
from shared.constant_contact.connections import NAME
from shared.errors import InputError
from shared.exports.access import usable_export
from shared.exports.definitions import ExportDefinition
from shared.runs.access import run_request
from shared.runs.launcher import NotReady
from shared.runs.store import state_store_for
from shared.storage import files
from shared.storage.documents import DocumentChanged
from shared.wiring import stores

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

bp = df.Blueprint()


@contextmanager
def _blob_service(app: Services) -> Iterator[BlobServiceClient | None]:
    """The app's Blob Storage for blocking reads (model.json, a preview's parts), or
    None when the inbox is a folder here; closed after the page."""
    service = stores.blob_service(app.config)
    try:
        yield service
    finally:
        if service is not None:
            service.close()


def _opener(service: BlobServiceClient | None) -> Opener:
    return lambda source: files.resolve(source, service)


def _editor(visit: Visit, open_source: Opener) -> ExportEditor:
    app = visit.app
    return ExportEditor(
        app.catalog, app.accounts(), app.inbox, open_source, visit.caller, console_path()
    )


def _form_page(view: FormView, name: str) -> Page:
    title = "Add export" if view.new else f"Export {name}"
    route = NEW if view.new else name
    return Page("export_form.html", {"title": title, "view": view, "route": route}, view.status)


def _refused(refusal: Refusal, definition: ExportDefinition) -> Page:
    shown = refusal.problem
    context: dict[str, Any] = {
        "title": shown.title,
        "problem": shown,
        "export": definition.name,
        "send_again": refusal.send_again,
    }
    return Page("export_refused.html", context, shown.status)


@page(bp, "exports", durable=True, GET=CONNECTION_ROLES)
async def console_exports(visit: Visit) -> Page:
    """The exports the caller may use, with their last run and its status, and Add export."""
    durable = visit.durable
    found = await overview(
        visit.app.catalog, visit.app.runs, visit.caller, lambda run_id: run_status(durable, run_id)
    )
    deleted = visit.query("deleted")
    context = {
        "title": "Exports",
        "exports": found.exports,
        "deleted": deleted if NAME.fullmatch(deleted) else "",
        "percent": percent_text,
    }
    return Page("exports.html", context)


@page(bp, "exports/{name}", GET=CONNECTION_ROLES, POST=CONNECTION_ROLES)
async def console_export(visit: Visit) -> Answer:
    """``exports/new``: add an export; ``exports/{name}``: see and edit one. A POST is
    one of the form's buttons (shared/console/export_editing.py); Save redirects
    back here, which then says that saving does not run it."""
    name = visit.param("name")
    with _blob_service(visit.app) as service:
        editor = _editor(visit, _opener(service))
        if visit.method == "POST":
            outcome = await editor.submit(name, visit.form)
            if isinstance(outcome, Saved):
                return Redirect(f"exports/{outcome.name}?saved=1")
            return _form_page(outcome, name)
        new = name == NEW
        form = await editor.blank(visit.query("connection")) if new else await editor.opened(name)
        notice = SAVED if visit.query("saved") and not new else None
        return _form_page(await editor.view(form, new=new, notice=notice), name)


@page(bp, "exports/{name}/run", durable=True, POST=CONNECTION_ROLES)
async def console_export_run(visit: Visit) -> Answer:
    """Run now, as ``POST /api/exports/{name}/runs``: through the launcher, with the
    caller; to the run's page, or why it did not start and what fixes it."""
    definition = (await usable_export(visit.app.catalog, visit.caller, visit.param("name"))).value
    request = run_request({"force": True} if visit.form.checked("force") else {})
    try:
        results = await visit.app.launcher(visit.durable).run_now(
            definition, force=request.force, options=request.options, caller=visit.caller
        )
    except (NotReady, InputError) as exc:
        return _refused(start_refused(exc, definition, console_path()), definition)
    started = first_started(results)
    if started is None:
        return _refused(not_started(results[0], console_path()), definition)
    return Redirect(f"runs/{started.run_id}")


@page(bp, "exports/{name}/preview", POST=CONNECTION_ROLES)
async def console_export_preview(visit: Visit) -> Page:
    """Preview: the dry run of what Run now would read; nothing is sent."""
    definition = (await usable_export(visit.app.catalog, visit.caller, visit.param("name"))).value
    app = visit.app
    with _blob_service(app) as service:
        try:
            found = await preview_export(
                definition,
                inbox=app.inbox,
                open_source=_opener(service),
                states=state_store_for(stores.run_store(app.config, service)),
                accounts=app.accounts(),
                now=datetime.now(UTC),
                quiet_seconds=app.config.app.quiet_seconds,
            )
        except InputError as exc:
            return _refused(start_refused(exc, definition, console_path()), definition)
    title = f"Preview of export {definition.name}"
    return Page("export_preview.html", {"title": title, "preview": found, "percent": percent_text})


@page(bp, "exports/{name}/delete", GET=CONNECTION_ROLES, POST=CONNECTION_ROLES)
async def console_export_delete(visit: Visit) -> Answer:
    """Delete, after a confirmation, as ``DELETE /api/exports/{name}``."""
    name = visit.param("name")
    stored = await usable_export(visit.app.catalog, visit.caller, name)
    if visit.method == "GET":
        context = {"title": f"Delete export {name}", "export": stored.value, "etag": stored.etag}
        return Page("export_delete.html", context)
    try:
        await visit.app.catalog.delete_export(name, visit.form.get("etag") or None)
    except DocumentChanged:
        raise DocumentChanged(
            f"export {name!r} was changed by someone else since this page was opened; "
            "nothing was deleted. Reload it to see what it holds now."
        ) from None
    return Redirect(f"exports?deleted={name}")
