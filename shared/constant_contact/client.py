"""The Constant Contact V3 endpoints ccexport uses: bulk imports, activities, lists,
custom fields, contacts, memberships, exports and the account's organization name.

``ConstantContactClient`` is a ``Transport`` (the session, the pacer, the retries: see
``transport``) with one method per endpoint: each builds its request, lets the
transport send it, and reads the answer into the typed objects of ``models``. The
paths, parameters and limits are those of ``contract/constant-contact-v3.yaml``;
list pages are followed by their ``_links.next.href``, never by a cursor of our own,
and a link is followed only inside the API (``Transport._absolute``): the token goes
nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import aiohttp
import orjson

from shared.constant_contact.models import Activity, Contact, ContactList, CustomField
from shared.constant_contact.transport import Call, Transport
from shared.errors import InputError, RemoteError

__all__ = ["ConstantContactClient"]

# Limits of contract/constant-contact-v3.yaml.
MAX_IDS_PER_REQUEST = 500  # contact_ids per membership activity
MAX_LISTS_PER_REQUEST = 50  # target list_ids per activity
PAGE_LIMIT = 500  # contacts and activities pages: 1-500
LISTS_PAGE_LIMIT = 500  # contact_lists: the official text says 1-500, its schema 1000
CUSTOM_FIELDS_PAGE_LIMIT = 100  # contact_custom_fields: 1-100


class ConstantContactClient(Transport):
    """An async client for one connected account (one token provider).

    Share one ``Pacer`` between every client of a process that uses the same API
    key: the limits are per key, not per client.
    """

    # -- bulk imports -----------------------------------------------------------------------

    async def import_json(self, body: bytes) -> Activity:
        """Start a JSON bulk import from a ready request body (sent byte for byte)."""
        call = Call(
            "POST",
            "POST /activities/contacts_json_import",
            self._url("activities", "contacts_json_import"),
            body=body,
            is_import=True,
        )
        return Activity.from_document(await self._json(call))

    async def import_csv(
        self,
        csv_bytes: bytes,
        list_ids: Sequence[str],
        *,
        file_name: str = "contacts.csv",
        sms_permission_to_send: str | None = None,
    ) -> Activity:
        """Start a CSV bulk import: multipart, with no Content-Type of our own (aiohttp
        sets it with the boundary, which the API needs: ``contacts_file_import`` in
        contract/constant-contact-v3.yaml)."""
        _check_target_lists(list_ids)

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("file", csv_bytes, filename=file_name, content_type="text/csv")
            data.add_field("list_ids", ",".join(list_ids))
            if sms_permission_to_send is not None:
                data.add_field("sms_permission_to_send", sms_permission_to_send)
            return data

        call = Call(
            "POST",
            "POST /activities/contacts_file_import",
            self._url("activities", "contacts_file_import"),
            form=form,
            is_import=True,
        )
        return Activity.from_document(await self._json(call))

    # -- activities ------------------------------------------------------------------------

    async def get_activity(self, activity_id: str) -> Activity:
        call = Call("GET", "GET /activities/{activity_id}", self._url("activities", activity_id))
        return Activity.from_document(await self._json(call))

    async def list_activities(
        self, state: str | None = None, limit: int = PAGE_LIMIT
    ) -> list[Activity]:
        """One page of the account's recent activities, newest first (one request)."""
        params = {"limit": str(limit)}
        if state is not None:
            params["state"] = state
        call = Call("GET", "GET /activities", self._url("activities"), params=params)
        doc = await self._json(call)
        items = doc.get("activities", []) if isinstance(doc, dict) else []
        return [Activity.from_document(item) for item in items]

    async def poll_imports(self, activity_ids: Iterable[str]) -> dict[str, Activity]:
        """The current state of many activities with as few requests as possible.

        One listing of the newest activities (any state: an import may still be
        ``initialized``, which the state filter cannot ask for) answers all that are
        among them; only ids missing from it are fetched one by one.
        """
        wanted = list(dict.fromkeys(activity_ids))
        found: dict[str, Activity] = {}
        if len(wanted) > 1:
            pending = set(wanted)
            for activity in await self.list_activities(limit=PAGE_LIMIT):
                if activity.activity_id in pending:
                    found[activity.activity_id] = activity
        missing = [a for a in wanted if a not in found]
        for activity in await asyncio.gather(*(self.get_activity(a) for a in missing)):
            found[activity.activity_id] = activity
        return {a: found[a] for a in wanted}

    async def wait_for(
        self, activity_id: str, *, poll_interval: float = 2.0, timeout: float = 600.0
    ) -> Activity:
        """Poll one activity until it is done; RemoteError when it takes too long."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            activity = await self.get_activity(activity_id)
            if activity.done:
                return activity
            if loop.time() + poll_interval > deadline:
                raise RemoteError(
                    f"activity {activity_id} still {activity.state} after {timeout:g}s"
                )
            await asyncio.sleep(poll_interval)

    # -- lists -------------------------------------------------------------------------------

    async def get_list(self, list_id: str) -> ContactList:
        """One list; RemoteError with status 404 when the account has no such list."""
        call = Call("GET", "GET /contact_lists/{list_id}", self._url("contact_lists", list_id))
        return ContactList.from_document(await self._json(call))

    async def lists(self, *, membership_count: bool = False) -> list[ContactList]:
        """Every list of the account, following the cursor links (with each list's
        member count when asked: ``include_membership_count=all``)."""
        params = {"limit": str(LISTS_PAGE_LIMIT)}
        if membership_count:
            params["include_membership_count"] = "all"
        pages = self._paged("GET /contact_lists", "contact_lists", params, "lists", "list page")
        return [ContactList.from_document(item) async for item in pages]

    async def create_list(self, name: str, *, description: str = "") -> ContactList:
        body = orjson.dumps({"name": name, "description": description, "favorite": False})
        call = Call("POST", "POST /contact_lists", self._url("contact_lists"), body=body)
        return ContactList.from_document(await self._json(call))

    async def create_or_find_list(self, name: str) -> tuple[ContactList, bool]:
        """A list of this name: created (True), or the one the account already has
        (False; Constant Contact answers 409 for a name taken)."""
        try:
            made = await self.create_list(name)
        except RemoteError as exc:
            if exc.status != 409:
                raise
        else:  # a new list has no members yet
            count = 0 if made.membership_count is None else made.membership_count
            return replace(made, membership_count=count), True
        for lst in await self.lists(membership_count=True):
            if lst.name == name:
                return lst, False
        raise RemoteError(
            f"POST /contact_lists: Constant Contact refused list {name!r} as a conflict (409), "
            "but the account has no list of that name",
            status=409,
        )

    async def check_lists(self, list_ids: Sequence[str]) -> list[str]:
        """The given list ids that the account does not have (fewest requests: one GET
        for a single id, else the paged listing)."""
        wanted = list(dict.fromkeys(list_ids))
        if not wanted:
            return []
        if len(wanted) == 1:
            try:
                await self.get_list(wanted[0])
            except RemoteError as exc:
                if exc.status == 404:
                    return wanted
                raise
            return []
        known = {lst.list_id for lst in await self.lists()}
        return [list_id for list_id in wanted if list_id not in known]

    # -- custom fields -------------------------------------------------------------------------

    async def custom_fields(self) -> list[CustomField]:
        """Every custom field of the account (at most 100), following the cursor links."""
        params = {"limit": str(CUSTOM_FIELDS_PAGE_LIMIT)}
        pages = self._paged(
            "GET /contact_custom_fields", "contact_custom_fields", params, "custom_fields", "page"
        )
        return [CustomField.from_document(item) async for item in pages]

    async def create_custom_field(self, label: str, *, field_type: str = "string") -> CustomField:
        """Create a custom field; its ``name`` (the ``cf:`` key) is made from the label
        (blanks become underscores). RemoteError 409 when the name is taken."""
        body = orjson.dumps({"label": label, "type": field_type})
        call = Call(
            "POST", "POST /contact_custom_fields", self._url("contact_custom_fields"), body=body
        )
        return CustomField.from_document(await self._json(call))

    # -- contacts ----------------------------------------------------------------------------

    async def contacts_by_list(
        self, list_id: str, *, status: str | None = None
    ) -> AsyncIterator[Contact]:
        """Every member of a list (contact_id and email), 500 a page, cursor by cursor."""
        params = {"lists": list_id, "limit": str(PAGE_LIMIT)}
        if status is not None:
            params["status"] = status
        pages = self._paged(
            "GET /contacts",
            "contacts",
            params,
            "contacts",
            "contact page",
            template="GET /contacts?lists",
        )
        async for item in pages:
            yield Contact.from_document(item)

    async def _paged(
        self,
        where: str,
        path: str,
        params: dict[str, str],
        key: str,
        page: str,
        *,
        template: str | None = None,
    ) -> AsyncIterator[Any]:
        """The items under ``key`` of every page, following the cursor links (inside
        the API only: shared.constant_contact.transport)."""
        url = self._url(path)
        query: dict[str, str] | None = params
        while True:
            doc = await self._json(Call("GET", template or where, url, params=query))
            if not isinstance(doc, dict):
                raise RemoteError(f"{where}: Constant Contact sent no {page}")
            for item in doc.get(key, []):
                yield item
            href = _next_href(doc)
            if href is None:
                return
            url, query = self._absolute(href, where), None

    async def contact_by_email(self, email: str) -> Contact | None:
        params = {"email": email, "status": "all"}
        call = Call("GET", "GET /contacts?email", self._url("contacts"), params=params)
        doc = await self._json(call)
        items = doc.get("contacts", []) if isinstance(doc, dict) else []
        return Contact.from_document(items[0]) if items else None

    # -- memberships ---------------------------------------------------------------------------

    async def add_list_memberships(
        self, contact_ids: Sequence[str], list_ids: Sequence[str]
    ) -> list[Activity]:
        """Add contacts to lists: one activity per 500 contact ids."""
        return await self._memberships("add_list_memberships", contact_ids, list_ids)

    async def remove_list_memberships(
        self, contact_ids: Sequence[str], list_ids: Sequence[str]
    ) -> list[Activity]:
        """Remove contacts from lists: one activity per 500 contact ids."""
        return await self._memberships("remove_list_memberships", contact_ids, list_ids)

    async def _memberships(
        self, kind: str, contact_ids: Sequence[str], list_ids: Sequence[str]
    ) -> list[Activity]:
        _check_target_lists(list_ids)
        ids = list(dict.fromkeys(contact_ids))
        activities: list[Activity] = []
        for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
            body = orjson.dumps(
                {
                    "source": {"contact_ids": ids[start : start + MAX_IDS_PER_REQUEST]},
                    "list_ids": list(list_ids),
                }
            )
            call = Call(
                "POST", f"POST /activities/{kind}", self._url("activities", kind), body=body
            )
            activities.append(Activity.from_document(await self._json(call)))
        return activities

    # -- account -----------------------------------------------------------------------------

    async def organization_name(self) -> str | None:
        """The name of the organization the account belongs to, or None when it has
        none: what shows an admin which account a connection reaches.

        ``GET /account/summary`` (scope ``account_read``). Only ``organization_name``
        is read: the summary also holds the owner's name, email address and phone,
        personal data ccexport has no use for, so they never leave this method.
        """
        call = Call("GET", "GET /account/summary", self._url("account", "summary"))
        doc = await self._json(call)
        name = doc.get("organization_name") if isinstance(doc, dict) else None
        return (name.strip() or None) if isinstance(name, str) else None

    # -- exports ------------------------------------------------------------------------------

    async def export_contacts(
        self,
        list_ids: Sequence[str],
        *,
        fields: Sequence[str] | None = None,
        poll_interval: float = 2.0,
        timeout: float = 600.0,
    ) -> bytes:
        """Export the members of lists as CSV: start, wait, then download the file."""
        _check_target_lists(list_ids)
        request: dict[str, Any] = {"list_ids": list(list_ids)}
        if fields:
            request["fields"] = list(fields)
        call = Call(
            "POST",
            "POST /activities/contact_exports",
            self._url("activities", "contact_exports"),
            body=orjson.dumps(request),
        )
        started = Activity.from_document(await self._json(call))
        done = await self.wait_for(
            started.activity_id, poll_interval=poll_interval, timeout=timeout
        )
        if done.state != "completed":
            raise RemoteError(f"contact export {done.activity_id} ended {done.state}")
        if done.results_href is None:
            raise RemoteError(f"contact export {done.activity_id} completed without a file link")
        # Followed as given (inside the API only): the official example href differs from
        # the route (contract/constant-contact-v3.yaml, info.description).
        return await self._request(
            Call(
                "GET",
                "GET /contact_exports/{file_export_id}",
                self._absolute(done.results_href, "GET /activities/{activity_id}"),
                accept="text/csv",
            )
        )


# --- wire helpers -----------------------------------------------------------------------------


def _check_target_lists(list_ids: Sequence[str]) -> None:
    if not list_ids:
        raise InputError("at least one list id is needed")
    if len(list_ids) > MAX_LISTS_PER_REQUEST:
        raise InputError(f"at most {MAX_LISTS_PER_REQUEST} list ids per request")


def _next_href(doc: Mapping[str, Any]) -> str | None:
    links = doc.get("_links")
    following = links.get("next") if isinstance(links, dict) else None
    href = following.get("href") if isinstance(following, dict) else None
    return href if isinstance(href, str) and href else None
