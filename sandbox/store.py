"""The account's state: contacts, contact lists and custom fields, held in memory only.

Nothing is written to disk: a sandbox starts empty and forgets everything when it stops.
Contacts are stored by column so that a million of them fit in a few hundred MB:

- a contact is an index; its ``contact_id`` is derived from the index (a per-sandbox
  UUID prefix plus the index as the last 12 hex digits), so ids cost no memory and
  map back to the index without a lookup table;
- the email (lower-cased, the key imports match on) sits in a list and a dict;
- the other imported properties are one orjson-encoded ``bytes`` per contact;
- timestamps are ``array('d')``, the subscription state a ``bytearray``;
- list membership is a bitmap per list (``membership.Membership``).
"""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sandbox.custom_fields import CustomFields
from sandbox.imports import compact_json
from sandbox.membership import Membership, union_indices
from sandbox.wire import ApiError

# Subscription states of a contact's email address.
IMPLICIT = 0  # the state every new contact from an import gets
UNSUBSCRIBED = 1

MAX_LISTS = 1000  # per account
MAX_LISTS_PER_CONTACT = 50  # the lists one contact can belong to
SMS_KEY_PREFIX = "sms:"
_EMPTY = b""


class StoreError(ApiError):
    """A change that the account's state refuses (duplicate list name, too many lists)."""


@dataclass
class ContactList:
    list_id: str
    name: str
    description: str
    favorite: bool
    created_at: float
    updated_at: float
    members: Membership = field(default_factory=Membership)


@dataclass
class UpsertResult:
    """What one batch of imported contacts did."""

    created: int = 0
    updated: int = 0
    cannot_add_to_list: int = 0


class Store:
    """Contacts and lists of the one account the sandbox serves."""

    def __init__(self) -> None:
        self._id_prefix = str(uuid.uuid4())[:24]
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.attrs: list[bytes] = []
        self.created: array[float] = array("d")
        self.updated: array[float] = array("d")
        self.state = bytearray()
        self.opted_out_at: dict[int, float] = {}
        self.lists: dict[str, ContactList] = {}
        self.custom_fields = CustomFields()

    # -- contacts ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.keys)

    def contact_id(self, index: int) -> str:
        return f"{self._id_prefix}{index:012x}"

    def index_of(self, contact_id: str) -> int | None:
        """The index behind a contact_id, or None for ids this sandbox never issued."""
        if len(contact_id) != 36 or not contact_id.startswith(self._id_prefix):
            return None
        try:
            index = int(contact_id[24:], 16)
        except ValueError:
            return None
        return index if index < len(self.keys) else None

    def find(self, key: str) -> int | None:
        return self.index.get(key.lower())

    def properties(self, index: int) -> dict[str, Any]:
        raw = self.attrs[index]
        result: dict[str, Any] = orjson.loads(raw) if raw else {}
        return result

    def is_unsubscribed(self, index: int) -> bool:
        return self.state[index] == UNSUBSCRIBED

    def lists_of(self, index: int) -> list[str]:
        return [lst.list_id for lst in self.lists.values() if index in lst.members]

    def _append(self, key: str, props: bytes, now: float) -> int:
        index = len(self.keys)
        self.keys.append(key)
        self.index[key] = index
        self.attrs.append(props or _EMPTY)
        self.created.append(now)
        self.updated.append(now)
        self.state.append(IMPLICIT)
        return index

    def upsert(
        self, records: Sequence[tuple[str, bytes]], list_ids: Sequence[str], now: float
    ) -> UpsertResult:
        """Create or update contacts and add them to lists, as a bulk import does.

        A record is (lower-cased email or ``sms:`` key, orjson-encoded properties).
        Only the properties given are updated; an existing contact keeps its
        permission. Unsubscribed contacts are updated but not added to any list
        (they count in ``cannot_add_to_list_count``, as the import activity documents).
        """
        result = UpsertResult()
        targets = [self.lists[list_id].members for list_id in list_ids if list_id in self.lists]
        capped = len(self.lists) > MAX_LISTS_PER_CONTACT
        index_get = self.index.get
        for key, props in records:
            index = index_get(key)
            if index is None:
                index = self._append(key, props, now)
                result.created += 1
            else:
                raw = self.attrs[index]
                if props and props != raw:  # the same properties again change nothing
                    merged = {**orjson.loads(raw), **orjson.loads(props)} if raw else None
                    self.attrs[index] = compact_json(merged) if merged else props
                self.updated[index] = now
                result.updated += 1
                if self.state[index] == UNSUBSCRIBED:
                    result.cannot_add_to_list += 1
                    continue
            if capped and len(self.lists_of(index)) >= MAX_LISTS_PER_CONTACT:
                result.cannot_add_to_list += 1
                continue
            for members in targets:
                members.add(index)
        return result

    def unsubscribe(self, keys: Iterable[str], now: float) -> int:
        """Opt contacts out (creating unknown ones); they leave every list.

        For tests: the real service unsubscribes through the contact's own action.
        """
        count = 0
        for raw_key in keys:
            key = raw_key.strip().lower()
            index = self.index.get(key)
            if index is None:
                index = self._append(key, _EMPTY, now)
            self.state[index] = UNSUBSCRIBED
            self.opted_out_at[index] = now
            self.updated[index] = now
            for lst in self.lists.values():
                lst.members.discard(index)
            count += 1
        return count

    def add_members(self, indices: Iterable[int], list_ids: Sequence[str]) -> int:
        """Add contacts to lists (add_list_memberships); unsubscribed ones are skipped."""
        targets = [self.lists[list_id].members for list_id in list_ids if list_id in self.lists]
        capped = len(self.lists) > MAX_LISTS_PER_CONTACT
        done = 0
        for index in indices:
            if self.state[index] == UNSUBSCRIBED:
                continue
            if capped and len(self.lists_of(index)) >= MAX_LISTS_PER_CONTACT:
                continue
            for members in targets:
                members.add(index)
            done += 1
        return done

    def remove_members(self, indices: Iterable[int], list_ids: Sequence[str]) -> int:
        targets = [self.lists[list_id].members for list_id in list_ids if list_id in self.lists]
        done = 0
        for index in indices:
            for members in targets:
                members.discard(index)
            done += 1
        return done

    def iter_contacts(
        self, start: int = 0, list_ids: Sequence[str] = (), states: frozenset[int] | None = None
    ) -> Iterator[int]:
        """Contact indices in creation order from ``start``, filtered by lists and state."""
        if list_ids:
            candidates: Iterable[int] = union_indices(
                [self.lists[list_id].members for list_id in list_ids if list_id in self.lists],
                start,
            )
        else:
            candidates = range(start, len(self.keys))
        if states is None:
            yield from candidates
            return
        state = self.state
        for index in candidates:
            if state[index] in states:
                yield index

    # -- lists --------------------------------------------------------------------

    def create_list(self, name: str, description: str, favorite: bool, now: float) -> ContactList:
        if any(lst.name == name for lst in self.lists.values()):
            raise StoreError(409, f"A list named {name!r} already exists.")
        if len(self.lists) >= MAX_LISTS:
            raise StoreError(400, f"An account can have at most {MAX_LISTS} lists.")
        lst = ContactList(str(uuid.uuid4()), name, description, favorite, now, now)
        self.lists[lst.list_id] = lst
        return lst

    def member_emails(self, list_id: str) -> list[str]:
        lst = self.lists[list_id]
        keys = self.keys
        return [keys[index] for index in lst.members.indices() if "@" in keys[index]]
