"""The export form: what a person fills in to add or edit an export, read back from a
submitted form, and the definition body it asks to save.

The form only collects. What a definition may say is shared.exports.definitions' and
shared.exports.editing's to decide: the body built here goes to
``definition_to_save`` as the HTTP API's ``PUT`` body does. ``problems`` only says,
next to each control, what was left unfilled or cannot be read as typed (no Email
column chosen, a removal limit that is not a number), so a person sees where to look
before the definition's own check speaks for the whole.

The words are Customer Insights' (Data > Exports): Export name, Connection, List,
Data matching (Email, First name, Last name, Add attribute), Segments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from shared.console.forms import Form
from shared.constant_contact.connections import NAME
from shared.constant_contact.contacts import (
    CUSTOM_PREFIX,
    DATE_FIELDS,
    EMAIL,
    NUMBER_FIELDS,
    TEXT_FIELDS,
    validate_mapping,
)
from shared.errors import ConfigError
from shared.exports.catalog import Stored
from shared.exports.definitions import DEFAULT_MAX_REMOVAL_SHARE, ExportDefinition

NEW = "new"
"""The route name of the add form (``exports/new``): an export named ``new`` is
reached through the HTTP API only."""

MATCHED = ("email", "first_name", "last_name")
"""The fields Data matching names on its own; Add attribute offers the others."""

ATTRIBUTE_FIELDS: tuple[str, ...] = tuple(
    f for f in (*TEXT_FIELDS, *DATE_FIELDS, *NUMBER_FIELDS) if f not in MATCHED
)
"""Every contact field a mapping accepts (shared/constant_contact/contacts.py), in
the order Constant Contact's import lists them, but those Data matching names."""


def field_label(target: str) -> str:
    """A contact field as a person reads it: ``home_street2`` is "Home street2"."""
    if target.startswith(CUSTOM_PREFIX):
        return f"Custom field {target[len(CUSTOM_PREFIX) :]}"
    return target.replace("_", " ").capitalize()


def percent_text(share: float) -> str:
    """A removal share as the percent a person types: 0.2 is "20"."""
    return f"{round(share * 100, 6):g}"


def segment_value(segment: Mapping[str, str]) -> str:
    """A segment as one form value (a checkbox's): its JSON, keys sorted, so the same
    segment is the same value whether it came from the inbox or the definition."""
    return orjson.dumps(dict(segment), option=orjson.OPT_SORT_KEYS).decode()


def segment_of(value: str) -> dict[str, str] | None:
    """The segment a form value names, or None when it is not one."""
    try:
        found = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(found, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in found.items()
    ):
        return None
    return found


@dataclass(frozen=True)
class Attribute:
    """One Add attribute row: a contact field (or ``cf:NAME``) and the column it takes."""

    field: str = ""
    column: str = ""

    @property
    def empty(self) -> bool:
        return not self.field and not self.column


@dataclass(frozen=True)
class ExportForm:
    """The export form's values, as typed or as the saved definition holds them."""

    name: str = ""
    connection: str = ""
    lists: tuple[str, ...] = ()
    """List names (or ids, for a definition saved with ids), in the order chosen."""
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    attributes: tuple[Attribute, ...] = ()
    segments: tuple[str, ...] = ()
    """Each segment as its form value (``segment_value``)."""
    mode: str = "add"
    removal_limit: str = percent_text(DEFAULT_MAX_REMOVAL_SHARE)
    """Mirror mode's removal limit, in percent, as typed."""
    enabled: bool = True
    create_custom_fields: bool = False
    new_list: str = ""
    new_field: str = ""
    etag: str = ""
    """The ETag of the definition the form was filled from: a save names it."""
    kept: Mapping[str, Any] = field(default_factory=dict)
    """What the form does not show (max_profiles, encoding, description): kept as
    the saved definition has it."""

    @classmethod
    def of(cls, stored: Stored[ExportDefinition]) -> ExportForm:
        """The form filled from a saved definition."""
        definition = stored.value
        mapping = dict(definition.mapping)
        data = definition.to_json()
        return cls(
            name=definition.name or "",
            connection=definition.connection or "",
            lists=tuple(definition.list_ids),
            email=mapping.pop(EMAIL, ""),
            first_name=mapping.pop("first_name", ""),
            last_name=mapping.pop("last_name", ""),
            attributes=tuple(Attribute(t, c) for t, c in mapping.items()),
            segments=tuple(segment_value(s.to_json()) for s in definition.segments),
            mode=definition.mode,
            removal_limit=percent_text(definition.max_removal_share),
            enabled=definition.enabled,
            create_custom_fields=definition.create_custom_fields,
            etag=stored.etag,
            kept={k: data[k] for k in ("max_profiles", "encoding", "description") if k in data},
        )

    @classmethod
    def parse(cls, form: Form) -> ExportForm:
        """The form as submitted. Attribute rows come as pairs of ``attr_field`` and
        ``attr_column`` (every row sends both); rows left empty are dropped."""
        fields, columns = form.all("attr_field"), form.all("attr_column")
        rows = [Attribute(f, c) for f, c in zip(fields, columns, strict=False)]
        return cls(
            name=form.get("name"),
            connection=form.get("connection"),
            lists=tuple(dict.fromkeys(v for v in form.all("list") if v)),
            email=form.get("email"),
            first_name=form.get("first_name"),
            last_name=form.get("last_name"),
            attributes=tuple(row for row in rows if not row.empty),
            segments=tuple(dict.fromkeys(v for v in form.all("segment") if v)),
            mode=form.get("mode", "add"),
            removal_limit=form.get("removal_limit"),
            enabled=form.checked("enabled"),
            create_custom_fields=form.checked("create_custom_fields"),
            new_list=form.get("new_list"),
            new_field=form.get("new_field"),
            etag=form.get("etag"),
        )

    def with_list(self, name: str) -> ExportForm:
        """The form with one more list chosen (a list just created or found)."""
        return replace(self, lists=tuple(dict.fromkeys((*self.lists, name))), new_list="")

    def with_attribute(self, attribute: Attribute | None = None) -> ExportForm:
        """The form with one more Add attribute row (empty, unless given)."""
        return replace(self, attributes=(*self.attributes, attribute or Attribute()), new_field="")

    @property
    def mapping(self) -> dict[str, str]:
        """Contact field -> column, as the definition's ``mapping`` takes it."""
        mapping = {EMAIL: self.email, "first_name": self.first_name, "last_name": self.last_name}
        mapping |= {a.field: a.column for a in self.attributes if a.field and a.column}
        return {target: column for target, column in mapping.items() if column}

    @property
    def chosen_segments(self) -> list[dict[str, str]]:
        return [s for s in map(segment_of, self.segments) if s is not None]

    @property
    def mapped_columns(self) -> list[str]:
        return list(dict.fromkeys(self.mapping.values()))

    def removal_share(self) -> float | None:
        """The removal limit as a share (20 -> 0.2); None when it is not a number."""
        try:
            percent = float(self.removal_limit.replace(",", ".").rstrip("% "))
        except ValueError:
            return None
        return percent / 100 if math.isfinite(percent) else None

    def body(self) -> dict[str, Any]:
        """The definition as the HTTP API's ``PUT /api/exports/{name}`` body."""
        share = self.removal_share()
        return {
            **self.kept,
            "connection": self.connection,
            "list_ids": list(self.lists),
            "mapping": self.mapping,
            "segments": self.chosen_segments,
            "mode": self.mode,
            "max_removal_share": DEFAULT_MAX_REMOVAL_SHARE if share is None else share,
            "enabled": self.enabled,
            "create_custom_fields": self.create_custom_fields,
        }

    def problems(self, *, new: bool) -> dict[str, str]:
        """What to fix before saving, by the control it is about (its ``id``)."""
        found: dict[str, str] = {}
        if new and not NAME.fullmatch(self.name):
            found["name"] = (
                "Give the export a name of 1-63 lower-case letters, digits and dashes, "
                "starting with a letter or digit."
            )
        elif new and self.name == "new":
            found["name"] = "'new' names the Add export page; give the export another name."
        if not self.connection:
            found["connection"] = "Choose the connection it sends with."
        if not self.lists:
            found["lists"] = "Choose at least one list, or create one under New list."
        if not self.email:
            found["email"] = "Choose the column that holds the email address: Email is required."
        seen: dict[str, int] = {}
        for number, row in enumerate(self.attributes, 1):
            if not row.field or not row.column:
                found[f"attr_field_{number}"] = (
                    f"Attribute {number}: choose both its field and its column, or neither "
                    "to leave it out."
                )
            elif row.field in MATCHED or row.field in seen:
                first = seen.get(row.field)
                where = f"attribute {first}" if first else "Data matching"
                found[f"attr_field_{number}"] = (
                    f"Attribute {number}: {field_label(row.field)} is chosen already, in {where}."
                )
            seen.setdefault(row.field, number)
        if self.removal_share() is None:
            found["removal_limit"] = "Removal limit: a number from 0 to 100 (percent)."
        if not found:
            try:
                validate_mapping(self.mapping)
            except ConfigError as exc:
                found["matching"] = f"Data matching: {exc}."
        return found


def attribute_choices(
    custom_fields: Sequence[tuple[str, str]], attributes: Sequence[Attribute]
) -> list[tuple[str, str]]:
    """The Field options of an Add attribute row, (value, label): every contact field
    the mapping accepts, the account's custom fields (name, label) as ``cf:NAME``, and
    any field the form holds already that neither lists (a custom field the account
    does not have yet)."""
    options = [(f, field_label(f)) for f in ATTRIBUTE_FIELDS]
    options += [(f"{CUSTOM_PREFIX}{name}", f"Custom field: {label or name} ({CUSTOM_PREFIX}{name})")
                for name, label in custom_fields]  # fmt: skip
    known = {value for value, _ in options}
    for row in attributes:
        if row.field and row.field not in known:
            label = field_label(row.field)
            if row.field.startswith(CUSTOM_PREFIX):
                label += " (not in the account yet)"
            options.append((row.field, label))
            known.add(row.field)
    return options
