"""What the Constant Contact V3 API answers, as typed objects: activities, lists,
custom fields, contacts.

Each is read from the API's JSON with ``from_document``, which keeps the fields
ccexport uses and ignores the rest (the service may send more than it documents). A
document without the object's id is a ``RemoteError``: nothing can be done with it.
The shapes are those of ``contract/constant-contact-v3.yaml``. Kept apart from the
client so that what a run reads and reports depends on the data, not on the HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import RemoteError

__all__ = ["TERMINAL_STATES", "Activity", "ActivityStatus", "Contact", "ContactList", "CustomField"]

TERMINAL_STATES = frozenset({"completed", "cancelled", "failed", "timed_out"})


@dataclass(frozen=True)
class ActivityStatus:
    items_total_count: int = 0
    items_completed_count: int = 0
    person_count: int = 0
    error_count: int = 0
    correctable_count: int = 0
    cannot_add_to_list_count: int = 0
    list_count: int = 0

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ActivityStatus:
        def count(name: str) -> int:
            value = doc.get(name, 0)
            return value if isinstance(value, int) else 0

        return cls(
            items_total_count=count("items_total_count"),
            items_completed_count=count("items_completed_count"),
            person_count=count("person_count"),
            error_count=count("error_count"),
            correctable_count=count("correctable_count"),
            cannot_add_to_list_count=count("cannot_add_to_list_count"),
            list_count=count("list_count"),
        )


@dataclass(frozen=True)
class Activity:
    """An asynchronous activity (import, membership change, export) as last seen."""

    activity_id: str
    state: str
    percent_done: int = 0
    status: ActivityStatus = field(default_factory=ActivityStatus)
    errors: tuple[str, ...] = ()
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    updated_at: str | None = None
    results_href: str | None = None

    @property
    def done(self) -> bool:
        """In a terminal state: completed, cancelled, failed or timed_out."""
        return self.state in TERMINAL_STATES

    @classmethod
    def from_document(cls, doc: Any) -> Activity:
        if not isinstance(doc, dict) or not isinstance(doc.get("activity_id"), str):
            raise RemoteError("Constant Contact sent an activity without an activity_id")
        links = doc.get("_links") or {}
        results = links.get("results") if isinstance(links, dict) else None
        href = results.get("href") if isinstance(results, dict) else None
        errors = doc.get("activity_errors") or []
        status = doc.get("status")
        return cls(
            activity_id=doc["activity_id"],
            state=str(doc.get("state", "")),
            percent_done=int(doc.get("percent_done") or 0),
            status=ActivityStatus.from_document(status if isinstance(status, dict) else {}),
            errors=tuple(str(e) for e in errors) if isinstance(errors, list) else (),
            created_at=doc.get("created_at"),
            started_at=doc.get("started_at"),
            completed_at=doc.get("completed_at"),
            updated_at=doc.get("updated_at"),
            results_href=href if isinstance(href, str) else None,
        )


@dataclass(frozen=True)
class ContactList:
    list_id: str
    name: str
    membership_count: int | None = None

    @classmethod
    def from_document(cls, doc: Any) -> ContactList:
        if not isinstance(doc, dict) or not isinstance(doc.get("list_id"), str):
            raise RemoteError("Constant Contact sent a list without a list_id")
        count = doc.get("membership_count")
        return cls(
            doc["list_id"], str(doc.get("name", "")), count if isinstance(count, int) else None
        )


@dataclass(frozen=True)
class CustomField:
    """A custom field of the account; imports name it ``cf:<name>``."""

    custom_field_id: str
    name: str
    label: str = ""
    type: str = ""

    @classmethod
    def from_document(cls, doc: Any) -> CustomField:
        if not isinstance(doc, dict) or not isinstance(doc.get("custom_field_id"), str):
            raise RemoteError("Constant Contact sent a custom field without a custom_field_id")
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            raise RemoteError("Constant Contact sent a custom field without a name")
        return cls(
            doc["custom_field_id"], name, str(doc.get("label") or ""), str(doc.get("type") or "")
        )


@dataclass(frozen=True)
class Contact:
    contact_id: str
    email: str | None = field(default=None, repr=False)  # never in a log line

    @classmethod
    def from_document(cls, doc: Any) -> Contact:
        if not isinstance(doc, dict) or not isinstance(doc.get("contact_id"), str):
            raise RemoteError("Constant Contact sent a contact without a contact_id")
        address = doc.get("email_address")
        email = address.get("address") if isinstance(address, dict) else None
        return cls(doc["contact_id"], email if isinstance(email, str) else None)
