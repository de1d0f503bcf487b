"""The export definition: which Constant Contact lists a segment goes to, and how its
columns map to contact fields. Validated when loaded, so a bad definition fails before
any file is read or request sent.

JSON form (``--config FILE``, and what the HTTP API stores)::

    {
      "name": "high-value",
      "list_ids": ["3fa85f64-5717-4562-b3fc-2c963f66afa6"],
      "mapping": {"email": "PrimaryEmail", "first_name": "FirstName", "cf:tier": "Tier"},
      "max_profiles": 1000000,
      "encoding": "utf-8",
      "connection": "default",
      "segments": [{"export": "BlobExport", "table": "HighValue*"}],
      "enabled": true,
      "mode": "mirror",
      "max_removal_share": 0.2,
      "create_custom_fields": true
    }

``list_ids`` holds list UUIDs or list names; names are resolved against the account
(shared/exports/account.py) when a run starts, before anything is sent, and the run carries
the ids. ``create_custom_fields`` (default false): before a run, create the mapped
``cf:`` custom fields the account lacks (as text fields) instead of stopping on them.

``connection``, ``segments`` and ``enabled`` are what the function app needs to run a
definition on its own: which Constant Contact account it sends with, which inbox
files belong to it, and whether the schedule and blob events may start it.
``connection_id`` is the app's own: when the HTTP API saves a definition it records
the id of the connection it was saved for (shared/exports/catalog.py), whatever the
request said, so a connection removed and added again under the same name does not
take over its exports.

``mode`` is ``add`` (the default: members are added and updated, never removed) or
``mirror`` (after the imports, members this export added that left the segment are
removed from its lists; see shared/runs/mirror.py). ``max_removal_share`` (default 0.2)
is the share of a list a mirror run may remove before it stops and asks for
confirmation: a truncated or empty file must never empty a list.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from shared.constant_contact.connections import NAME, check_connection
from shared.constant_contact.contacts import validate_mapping
from shared.errors import ConfigError, InputError
from shared.segments.blocks import text_encoding

DEFAULT_MAX_PROFILES = 1_000_000
MODES = ("add", "mirror")
DEFAULT_MAX_REMOVAL_SHARE = 0.2
MAX_LISTS = 50
_CONNECTION_ID = re.compile(r"[0-9a-f]{0,32}")
_FIELDS = {
    "name",
    "list_ids",
    "mapping",
    "max_profiles",
    "encoding",
    "description",
    "connection",
    "connection_id",
    "segments",
    "enabled",
    "mode",
    "max_removal_share",
    "create_custom_fields",
}
_SEGMENT_FIELDS = ("export", "table", "prefix")
_MAX_PATTERN = 256
MIN_PATTERN_START = 3  # the literal characters a segment pattern needs before its '*'
_WILDCARDS = frozenset("*?[]")
# A definition is a few KB (50 lists, a mapping, a description); one larger is refused
# before it is parsed from a file, and before it is stored or run from any other source.
MAX_DEFINITION_BYTES = 64 * 1024
LIST_NAME_MAX = 255  # ListInput.name's maxLength in contract/constant-contact-v3.yaml
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_list_uuid(value: str) -> bool:
    """Whether a list reference is an id (a UUID) rather than a list name."""
    try:
        uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        return False
    return True


def check_list_id(value: str) -> str:
    """A Constant Contact list: its id, returned as a canonical lower-case UUID, or its
    name (1-255 characters, no control characters; outer blanks trimmed), which is
    resolved against the account before a run sends anything (shared/exports/account.py)."""
    if not isinstance(value, str):
        raise ConfigError(f"list {value!r}: give a list id (a UUID) or a list name")
    if is_list_uuid(value):
        return str(uuid.UUID(value.strip()))
    name = value.strip()
    if not name or len(name) > LIST_NAME_MAX or _CONTROL.search(name):
        raise ConfigError(
            f"list {value[:80]!r} is neither a list id (a UUID) nor a list name "
            f"(1-{LIST_NAME_MAX} characters without control characters)"
        )
    return name


def list_names(list_ids: Sequence[str]) -> list[str]:
    """The references among ``list_ids`` that are list names, not ids."""
    return [ref for ref in list_ids if not is_list_uuid(ref)]


@dataclass(frozen=True)
class SegmentMatch:
    """Which inbox files belong to an export.

    Customer Insights writes ``<root>/<Export>/<Table>/yyyy/MM/dd/HHmm/<Table>_N.csv``.
    A segment names its export, so that no definition (saved by an admin or by a
    contributor, for their own team) can take another team's files:

    - ``export`` (required) and ``table`` (optional) are each a folder name, or its
      first ``MIN_PATTERN_START`` or more characters followed by one ``*``
      (``HighValue*``: every name that starts so). Matched without regard to case,
      because people type these names from the Customer Insights portal. Nothing else
      is a pattern: ``?``, ``[``, ``]`` and a ``*`` anywhere but last are refused, so
      no spelling (``*``, ``?*``, ``**``, ``[!x]*``) can match every export or every
      table.
    - ``table`` left out: every table of the matching exports.
    - ``prefix`` (optional): a path in the inbox container that ``<root><Export>/<Table>/``
      must start with, for exports kept in their own folder.
    """

    export: str = ""
    table: str = ""
    prefix: str = ""

    def __post_init__(self) -> None:
        if not self.export:
            raise ConfigError(
                "a segment must name its export (the folder Customer Insights writes, "
                "or its first characters and '*'), so it cannot take another export's files"
            )
        _check_pattern("export", self.export)
        if self.table:
            _check_pattern("table", self.table)
        if (
            len(self.prefix) > _MAX_PATTERN
            or self.prefix.startswith("/")
            or (".." in self.prefix.split("/"))
        ):
            raise ConfigError(
                f"segment prefix {self.prefix[:80]!r}: a path inside the inbox container, "
                "without a leading '/' or '..'"
            )

    def matches(self, root: str, export: str, table: str) -> bool:
        """Whether the table folder ``<root><export>/<table>/`` belongs to this segment."""
        folder = f"{root}{export}/{table}/"
        return (
            folder.startswith(self.prefix)
            and _name_matches(self.export, export)
            and (not self.table or _name_matches(self.table, table))
        )

    def to_json(self) -> dict[str, str]:
        data = {"export": self.export, "table": self.table, "prefix": self.prefix}
        return {k: v for k, v in data.items() if v}


def _check_pattern(field_name: str, value: str) -> None:
    """A folder name, or at least MIN_PATTERN_START literal characters and one '*'."""
    name = value[:-1] if value.endswith("*") else value
    if (
        len(value) > _MAX_PATTERN
        or "/" in value
        or _CONTROL.search(value)
        or any(c in _WILDCARDS for c in name)
        or (name != value and len(name) < MIN_PATTERN_START)
    ):
        raise ConfigError(
            f"segment {field_name} {value[:80]!r}: a folder name, or its first "
            f"{MIN_PATTERN_START} or more characters followed by one '*' (such as "
            f"'HighValue*'); no '/', '?', '[' or ']', and '*' only at the end, so that "
            f"no segment matches every {field_name}"
        )


def _name_matches(pattern: str, name: str) -> bool:
    """A folder name against a segment pattern, without regard to case."""
    wanted, folded = pattern.casefold(), name.casefold()
    if wanted.endswith("*"):
        return folded.startswith(wanted[:-1])
    return folded == wanted


@dataclass(frozen=True)
class ExportDefinition:
    list_ids: tuple[str, ...]
    mapping: Mapping[str, str]
    name: str | None = None
    max_profiles: int = DEFAULT_MAX_PROFILES
    encoding: str | None = None
    description: str = ""
    connection: str | None = None
    connection_id: str = ""
    segments: tuple[SegmentMatch, ...] = ()
    enabled: bool = True
    mode: str = "add"
    max_removal_share: float = DEFAULT_MAX_REMOVAL_SHARE
    create_custom_fields: bool = False

    def __post_init__(self) -> None:
        if not self.list_ids:
            raise ConfigError(
                "no list id: name at least one Constant Contact list (--list-id UUID)"
            )
        if not isinstance(self.create_custom_fields, bool):
            raise ConfigError("create_custom_fields must be true or false")
        if len(self.list_ids) > MAX_LISTS:
            raise ConfigError(f"{len(self.list_ids)} list ids; an import takes at most {MAX_LISTS}")
        if self.name is not None and not NAME.fullmatch(self.name):
            raise ConfigError(
                f"export name {self.name!r}: use 1-63 lower-case letters, digits and dashes"
            )
        if not isinstance(self.max_profiles, int) or self.max_profiles < 1:
            raise ConfigError(
                f"max_profiles must be a positive whole number, not {self.max_profiles!r}"
            )
        validate_mapping(self.mapping)
        if self.mode not in MODES:
            raise ConfigError(f'mode {str(self.mode)[:40]!r}: use "add" or "mirror"')
        share = self.max_removal_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise ConfigError(
                f"max_removal_share must be a number from 0 to 1 (0.2 is 20 %), not {share!r}"
            )
        if self.connection is not None:
            check_connection(self.connection)

    def matches(self, root: str, export: str, table: str) -> bool:
        """Whether files of this Customer Insights export and table belong to it."""
        return any(segment.matches(root, export, table) for segment in self.segments)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "list_ids": list(self.list_ids),
            "mapping": dict(self.mapping),
            "max_profiles": self.max_profiles,
        }
        if self.name:
            data["name"] = self.name
        if self.encoding:
            data["encoding"] = self.encoding
        if self.description:
            data["description"] = self.description
        if self.connection:
            data["connection"] = self.connection
        if self.connection_id:
            data["connection_id"] = self.connection_id
        if self.segments:
            data["segments"] = [segment.to_json() for segment in self.segments]
        if not self.enabled:
            data["enabled"] = False
        if self.mode != "add":
            data["mode"] = self.mode
        if self.max_removal_share != DEFAULT_MAX_REMOVAL_SHARE:
            data["max_removal_share"] = self.max_removal_share
        if self.create_custom_fields:
            data["create_custom_fields"] = True
        return data

    @property
    def custom_field_names(self) -> list[str]:
        """The custom fields the mapping sends to (``cf:NAME`` -> NAME), in its order."""
        return [target[3:] for target in self.mapping if target.startswith("cf:")]

    def with_overrides(
        self,
        *,
        list_ids: Sequence[str] = (),
        mapping: Mapping[str, str] | None = None,
        max_profiles: int | None = None,
        mode: str | None = None,
        max_removal_share: float | None = None,
    ) -> ExportDefinition:
        """Command-line flags on top of a definition: lists are added, mappings replaced."""
        lists = tuple(dict.fromkeys([*self.list_ids, *(check_list_id(v) for v in list_ids)]))
        return replace(
            self,
            list_ids=lists,
            mapping={**self.mapping, **(mapping or {})},
            max_profiles=self.max_profiles if max_profiles is None else max_profiles,
            mode=self.mode if mode is None else mode,
            max_removal_share=(
                self.max_removal_share if max_removal_share is None else max_removal_share
            ),
        )


def from_json(data: Any, *, where: str = "export definition") -> ExportDefinition:
    """Build and validate a definition from parsed JSON."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    if len(orjson.dumps(data)) > MAX_DEFINITION_BYTES:
        raise _too_large(where)
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    raw_lists = data.get("list_ids", [])
    if not isinstance(raw_lists, list) or not all(isinstance(v, str) for v in raw_lists):
        raise ConfigError(f"{where}: list_ids must be a list of list ids (UUIDs) or names")
    mapping = data.get("mapping", {})
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ConfigError(f"{where}: mapping must be an object of field names to column names")
    encoding = data.get("encoding")
    if encoding is not None and not isinstance(encoding, str):
        raise ConfigError(f'{where}: encoding must be a string such as "utf-8"')
    if encoding is not None:
        try:
            text_encoding(encoding)
        except InputError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    connection = data.get("connection")
    if connection is not None and not isinstance(connection, str):
        raise ConfigError(f"{where}: connection must be the name of a connection")
    connection_id = data.get("connection_id", "")
    if not isinstance(connection_id, str) or not _CONNECTION_ID.fullmatch(connection_id):
        raise ConfigError(f"{where}: connection_id is the app's own; leave it out")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: enabled must be true or false")
    create_fields = data.get("create_custom_fields", False)
    if not isinstance(create_fields, bool):
        raise ConfigError(f"{where}: create_custom_fields must be true or false")
    return ExportDefinition(
        list_ids=tuple(dict.fromkeys(check_list_id(v) for v in raw_lists)),
        mapping=dict(mapping),
        name=data.get("name"),
        max_profiles=data.get("max_profiles", DEFAULT_MAX_PROFILES),
        encoding=encoding,
        description=str(data.get("description", "")),
        connection=connection,
        connection_id=connection_id,
        segments=_segments(data.get("segments", []), where),
        enabled=enabled,
        mode=data.get("mode", "add"),
        max_removal_share=data.get("max_removal_share", DEFAULT_MAX_REMOVAL_SHARE),
        create_custom_fields=create_fields,
    )


def _segments(raw: Any, where: str) -> tuple[SegmentMatch, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: segments must be a list of objects")
    found: list[SegmentMatch] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: segments[{index}] must be an object")
        unknown = sorted(set(item) - set(_SEGMENT_FIELDS))
        if unknown:
            raise ConfigError(f"{where}: segments[{index}]: unknown field(s) {', '.join(unknown)}")
        if not all(isinstance(item.get(k, ""), str) for k in _SEGMENT_FIELDS):
            raise ConfigError(f"{where}: segments[{index}]: export, table and prefix are strings")
        try:
            found.append(
                SegmentMatch(
                    export=item.get("export", ""),
                    table=item.get("table", ""),
                    prefix=item.get("prefix", ""),
                )
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: segments[{index}]: {exc}") from None
    return tuple(dict.fromkeys(found))


def load(path: Path) -> ExportDefinition:
    """Read a definition file (``--config``)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_DEFINITION_BYTES + 1)
        if len(raw) > MAX_DEFINITION_BYTES:
            raise _too_large(str(path))
        data = orjson.loads(raw)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return from_json(data, where=str(path))


def _too_large(where: str) -> ConfigError:
    return ConfigError(
        f"{where}: larger than {MAX_DEFINITION_BYTES >> 10} KB, which no export definition needs"
    )


def parse_maps(values: Sequence[str]) -> dict[str, str]:
    """--map FIELD=COLUMN flags to a mapping."""
    mapping: dict[str, str] = {}
    for value in values:
        target, sep, column = value.partition("=")
        if not sep or not target.strip() or not column.strip():
            raise ConfigError(f"--map {value!r}: expected FIELD=COLUMN, e.g. email=PrimaryEmail")
        mapping[target.strip()] = column.strip()
    return mapping
