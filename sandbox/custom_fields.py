"""The account's custom-field definitions (``/v3/contact_custom_fields``).

What Constant Contact's V3 spec says (contract/constant-contact-v3.yaml keeps the
facts ccexport relies on) and what the sandbox does:

- ``name`` is read-only, "the unique custom field name constructed from the label by
  replacing blanks with underscores" (``CustomField.name``, maxLength 50). The
  sandbox strips the label's leading and trailing blanks and replaces every other
  whitespace character with ``_``; nothing else changes (case is kept).
- ``label`` is required, 1-50 characters (``CustomFieldRequest.label`` maxLength 50).
- ``type``: the spec lists text, number, date, currency, drop-downs, radio buttons
  and check boxes; the sandbox models ``string`` and ``date`` only and answers 400
  for any other type (and for ``choices``).
- "A user can configure up to 100 ``custom_fields`` in their account"
  (``POST /contact_custom_fields``): the 101st is refused with 400 (the spec documents
  no other status for it).
- A second field with the same name is a 409 conflict (the API documents 409 for a
  "duplicate list name or custom field"). Names are compared without regard to case
  (silent in the docs; ``Tier`` and ``tier`` side by side would make ``cf:`` keys
  ambiguous to read).
- Import ``cf:<name>`` keys match a field's ``name`` exactly (case included).
- Deleting and updating fields is not modelled.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sandbox import wire
from sandbox.wire import ApiError

MAX_CUSTOM_FIELDS = 100  # per account (POST /contact_custom_fields)
LABEL_MAX = 50
TYPES = frozenset({"string", "date"})
_BLANK = re.compile(r"\s")


@dataclass
class CustomField:
    custom_field_id: str
    label: str
    name: str
    type: str
    created_at: float
    updated_at: float

    def document(self) -> dict[str, Any]:
        """The ``CustomField`` resource as the API returns it."""
        return {
            "custom_field_id": self.custom_field_id,
            "label": self.label,
            "name": self.name,
            "type": self.type,
            "created_at": wire.iso(self.created_at),
            "updated_at": wire.iso(self.updated_at),
        }


def name_of(label: str) -> str:
    """The field's ``name``: the label with its blanks replaced by underscores."""
    return _BLANK.sub("_", label.strip())


class CustomFields:
    """Every custom field of the account, in creation order."""

    def __init__(self) -> None:
        self.by_id: dict[str, CustomField] = {}
        self.by_name: dict[str, CustomField] = {}  # the exact name, as imports use it
        self._folded: dict[str, CustomField] = {}  # casefolded name, for conflicts

    def __len__(self) -> int:
        return len(self.by_id)

    def ordered(self) -> list[CustomField]:
        return list(self.by_id.values())

    def create(self, payload: Any, now: float) -> CustomField:
        """Validate a ``CustomFieldRequest`` body and create the field."""
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        label = payload.get("label")
        if not isinstance(label, str) or not label.strip() or len(label) > LABEL_MAX:
            raise ApiError(400, f"label is required and must be at most {LABEL_MAX} characters.")
        kind = payload.get("type")
        if not isinstance(kind, str) or kind not in TYPES:
            raise ApiError(
                400, "type must be string or date (the sandbox models no other custom field type)."
            )
        if payload.get("choices"):
            raise ApiError(400, "choices apply to select fields, which the sandbox does not model.")
        name = name_of(label)
        if name.casefold() in self._folded:
            raise ApiError(409, f"A custom field named {name!r} already exists.")
        if len(self.by_id) >= MAX_CUSTOM_FIELDS:
            raise ApiError(400, f"An account can have at most {MAX_CUSTOM_FIELDS} custom fields.")
        field = CustomField(str(uuid.uuid4()), label.strip(), name, kind, now, now)
        self.by_id[field.custom_field_id] = field
        self.by_name[name] = field
        self._folded[name.casefold()] = field
        return field
