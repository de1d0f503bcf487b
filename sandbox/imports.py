"""Reading bulk-import requests: the 4 MB and 40,000-contact rules, validation, records.

What the documentation says and what the sandbox does:

- "If the request body exceeds 4 MB, this method only imports the first 4 MB and drops
  the remaining data" (``contacts_json_import``). The sandbox takes 4 MB as
  4,000,000 bytes and imports only the contacts whose JSON object ends within the
  first 4,000,000 bytes of the body. The rest of the body (``list_ids`` and
  ``sms_permission_to_send``, wherever they stand) is still read from the complete
  JSON, so a client that sends too much loses contacts silently, exactly as the docs
  warn, whatever the order of its keys.
- CSV: only whole lines within the first 4,000,000 bytes of the file, and at most
  40,000 lines including the header (``contacts_file_import``).
- What the service does with JSON above 40,000 contacts is unconfirmed. The
  sandbox follows the guide's wording for both formats ("only the contacts contained
  in the first 4 MB (and in lines ≤40k) are processed"): contacts past the 40,000th
  are dropped silently, not rejected.
- Schema violations (wrong types, over-long strings, bad list ids) reject the whole
  request with 400 and the documented error array. Contact-level problems are
  counted in the activity instead: an invalid email address is *correctable*, a
  contact with neither ``email`` nor ``sms_number`` an *error*.
- ``email`` is limited to 50 characters, the import schema's ``maxLength`` (the contact
  resource allows 80; which one the server enforces is unconfirmed).
- The spec names the home country property ``"home country"`` (with a space, a spec
  bug); both that and ``home_country`` are accepted and stored as ``home_country``.
- Custom fields (``cf:<name>``): "The custom field must already exist in the Constant
  Contact account" (``contacts_json_import``); what happens when it does not is
  undocumented. The sandbox imports the contact with its other properties, leaves
  the unknown field's values out (they are not stored), and names each unknown field
  once in the activity's ``activity_errors``; the counters are unchanged (the contact
  itself was imported). ``<name>`` must equal a defined field's ``name`` exactly
  (sandbox/custom_fields.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sandbox.wire import ApiError

MAX_BODY_BYTES = 4_000_000
MAX_CONTACTS = 40_000
MAX_CSV_LINES = 40_000  # including the header row
MAX_LIST_IDS = 50
MAX_CUSTOM_FIELDS = 25
MAX_ACTIVITY_ERRORS = 100
SMS_PERMISSIONS = frozenset({"explicit", "not_set"})

# Property -> maxLength, from the spec's JsonImportContact; None marks the integers.
STRING_FIELDS: dict[str, int] = {
    "first_name": 50, "last_name": 50, "job_title": 50, "company_name": 50,
    "anniversary": 10,
    "phone": 50, "home_phone": 50, "work_phone": 50, "mobile_phone": 50, "other_phone": 50,
    "street": 255, "street2": 255, "city": 50, "state": 50, "zip": 50, "country": 50,
    "home_street": 255, "home_street2": 255, "home_city": 50, "home_state": 50,
    "home_zip": 50, "home_country": 50,
    "work_street": 255, "work_street2": 255, "work_city": 50, "work_state": 50,
    "work_zip": 50, "work_country": 50,
    "other_street": 255, "other_street2": 255, "other_city": 50, "other_state": 50,
    "other_zip": 50, "other_country": 50,
    "sms_consent_date": 16,
}  # fmt: skip
INTEGER_FIELDS = frozenset({"birthday_month", "birthday_day"})
EMAIL_MAX = 50
SMS_MAX = 16
CUSTOM_FIELD_MAX = 255
LIMITS = {**STRING_FIELDS, "email": EMAIL_MAX, "sms_number": SMS_MAX}
# Properties whose limit is at least _PLAIN_MAX: a contact made only of these, all short
# non-empty strings, needs no per-property check (the fast path for typical imports).
_PLAIN_MAX = 50
_PLAIN_FIELDS = frozenset(name for name, most in LIMITS.items() if most >= _PLAIN_MAX)
ALIASES = {"home country": "home_country"}  # the spec's misspelt name

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# A JSON object of scalar members (an import contact). Possessive quantifiers keep the
# scan linear: it never backtracks into a string or a run of plain characters.
_CONTACT_OBJECT = re.compile(rb'\{(?:[^{}"]++|"(?:[^"\\]++|\\.)*+")*+\}', re.DOTALL)
_IMPORT_DATA = re.compile(rb'"import_data"\s*:\s*\[')


class ImportRejected(ApiError):
    """An import request answered with an error status (400, 404, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


@dataclass
class ImportBatch:
    """A validated import: the records to apply and what the activity will report."""

    records: list[tuple[str, bytes]]
    list_ids: list[str]
    items_total: int
    error_count: int = 0
    correctable_count: int = 0
    dropped: int = 0  # contacts past the 4 MB / 40,000 limits, silently not imported
    activity_errors: list[str] = field(default_factory=list)
    source_file_name: str | None = None
    unknown_fields: set[str] = field(default_factory=set)  # cf: keys with no definition


def check_list_ids(list_ids: object, known: Sequence[str] | set[str] | dict[str, Any]) -> list[str]:
    """``list_ids`` as the import schema demands: 1 to 50 UUIDs of existing lists."""
    if not isinstance(list_ids, list) or not all(isinstance(i, str) for i in list_ids):
        raise ImportRejected("list_ids must be an array of list_id strings.")
    if not 1 <= len(list_ids) <= MAX_LIST_IDS:
        raise ImportRejected(f"list_ids must contain 1 to {MAX_LIST_IDS} items.")
    for list_id in list_ids:
        if not _UUID.fullmatch(list_id):
            raise ImportRejected(f"list_id {list_id!r} is not a valid UUID.")
        if list_id not in known:
            raise ImportRejected(f"list_id {list_id} was not found.")
    return list(dict.fromkeys(list_ids))


def kept_by_size(body: bytes, limit: int = MAX_BODY_BYTES) -> int:
    """How many import_data objects end within the first ``limit`` bytes of ``body``."""
    start = _IMPORT_DATA.search(body)
    if start is None:
        return 0
    kept = 0
    for match in _CONTACT_OBJECT.finditer(body, start.end()):
        if match.end() > limit:
            break
        kept += 1
    return kept


class _Validator:
    """Turns contacts into (key, encoded properties) records and counts what it drops."""

    def __init__(self, batch: ImportBatch, custom_fields: Container[str]) -> None:
        self.batch = batch
        self.custom_fields = custom_fields  # the names of the account's custom fields

    def note(self, message: str) -> None:
        if len(self.batch.activity_errors) < MAX_ACTIVITY_ERRORS:
            self.batch.activity_errors.append(message)

    def record(self, where: str, contact: dict[str, Any]) -> tuple[str, bytes] | None:
        """The contact's record; None (and counted) when the contact cannot be imported.

        Raises ImportRejected for schema violations, which reject the whole request.
        """
        values = contact.values()
        if (
            contact.keys() <= _PLAIN_FIELDS
            and all(type(value) is str for value in values)
            and max(map(len, values), default=0) <= _PLAIN_MAX
            and "" not in values
        ):
            props = contact  # the common case, checked in C: only short strings
        else:
            props = self._checked(where, contact)
        email = props.pop("email", "").strip()
        if email:
            if not _EMAIL.fullmatch(email):
                self.batch.correctable_count += 1
                self.note(f"{where}: the email address is not valid.")
                return None
            return email.lower(), compact_json(props) if props else b""
        sms = props.get("sms_number", "").strip()
        if sms:
            props["sms_number"] = sms
            return f"sms:{sms}", compact_json(props)
        self.batch.error_count += 1
        self.note(f"{where}: a contact needs an email address or an SMS number.")
        return None

    def _checked(self, where: str, contact: dict[str, Any]) -> dict[str, Any]:
        """Every property checked against JsonImportContact; unknown ones left out."""
        props: dict[str, Any] = {}
        custom = 0
        for raw_name, value in contact.items():
            name = ALIASES.get(raw_name, raw_name)
            limit = LIMITS.get(name)
            undefined = False
            if limit is None and name[:3] == "cf:":
                limit = CUSTOM_FIELD_MAX
                custom += 1
                if custom > MAX_CUSTOM_FIELDS:
                    raise ImportRejected(
                        f"{where} has more than {MAX_CUSTOM_FIELDS} custom fields."
                    )
                undefined = name[3:] not in self.custom_fields
            if name in INTEGER_FIELDS:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ImportRejected(f"{where}.{name} must be an integer.")
            elif limit is None:
                continue  # not part of JsonImportContact: ignored, as the service does
            elif not isinstance(value, str) or len(value) > limit:
                raise ImportRejected(
                    f"{where}.{name} must be a string of at most {limit} characters."
                )
            if undefined:
                self._undefined(name)
                continue
            if value != "":
                props[name] = value
        return props

    def _undefined(self, name: str) -> None:
        """A ``cf:`` key with no custom field of that name: named once per import."""
        if name not in self.batch.unknown_fields:
            self.batch.unknown_fields.add(name)
            self.note(
                f"{name}: no custom field named {name[3:]!r} exists in the account; "
                "its values were not imported."
            )


def compact_json(value: Any) -> bytes:
    """orjson's bytes, copied to their exact size.

    orjson returns small documents in a buffer of about 4 KB; kept per contact, those
    buffers would take many times the memory of the contacts themselves.
    """
    return bytes(memoryview(orjson.dumps(value)))


def read_json_import(
    body: bytes, known_lists: dict[str, Any], custom_fields: Container[str] = frozenset()
) -> ImportBatch:
    """Validate a contacts_json_import body and apply the 4 MB / 40,000 rules.

    ``custom_fields``: the names of the account's custom fields."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ImportRejected(f"The request body is not valid JSON: {exc.msg}.") from None
    if not isinstance(payload, dict):
        raise ImportRejected("The request body must be a JSON object.")
    contacts = payload.get("import_data")
    if not isinstance(contacts, list):
        raise ImportRejected("import_data is required and must be an array.")
    list_ids = check_list_ids(payload.get("list_ids"), known_lists)
    sms_permission = payload.get("sms_permission_to_send")
    if sms_permission is not None and sms_permission not in SMS_PERMISSIONS:
        raise ImportRejected("sms_permission_to_send must be explicit or not_set.")
    received = len(contacts)
    if len(body) > MAX_BODY_BYTES:
        contacts = contacts[: kept_by_size(body)]
    contacts = contacts[:MAX_CONTACTS]
    batch = ImportBatch([], list_ids, items_total=len(contacts), dropped=received - len(contacts))
    validator = _Validator(batch, custom_fields)
    records = batch.records
    for position, contact in enumerate(contacts):
        if not isinstance(contact, dict):
            raise ImportRejected(f"import_data[{position}] must be an object.")
        record = validator.record(f"import_data[{position}]", contact)
        if record is not None:
            records.append(record)
    if not contacts and not received:
        raise ImportRejected("import_data must contain at least one contact.")
    return batch


def read_csv_import(
    data: bytes,
    file_name: str,
    list_ids_field: str,
    known_lists: dict[str, Any],
    custom_fields: Container[str] = frozenset(),
) -> ImportBatch:
    """Validate a contacts_file_import upload and apply the 4 MB / 40,000-line rules."""
    if not file_name.lower().endswith(".csv"):
        raise ImportRejected("Wrong file format, upload file must be of type .csv", 415)
    list_ids = check_list_ids(
        [i.strip() for i in list_ids_field.split(",") if i.strip()], known_lists
    )
    received_bytes = len(data)
    if received_bytes > MAX_BODY_BYTES:
        cut = data.rfind(b"\n", 0, MAX_BODY_BYTES + 1)
        data = data[: cut + 1] if cut >= 0 else b""
    text = data.decode("utf-8-sig", errors="replace")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise ImportRejected("The file is empty.")
    header = [ALIASES.get(name.strip(), name.strip()) for name in rows[0]]
    if "email" not in header and "sms_number" not in header:
        raise ImportRejected("The file must have an email or sms_number column.")
    all_rows = len(rows) - 1
    body = rows[1:MAX_CSV_LINES]
    batch = ImportBatch([], list_ids, items_total=len(body) + 1, dropped=all_rows - len(body))
    batch.source_file_name = file_name
    validator = _Validator(batch, custom_fields)
    for line, row in enumerate(body, start=2):
        contact = _csv_contact(header, row)
        if contact is None:
            batch.correctable_count += 1
            validator.note(f"line {line}: birthday_month and birthday_day must be numbers.")
            continue
        if not contact:
            continue  # a blank line
        try:
            record = validator.record(f"line {line}", contact)
        except ImportRejected as exc:  # one bad line does not reject the whole file
            batch.error_count += 1
            validator.note(exc.message)
            continue
        if record is not None:
            batch.records.append(record)
    return batch


def _csv_contact(header: list[str], row: list[str]) -> dict[str, Any] | None:
    """One CSV line as an import contact; None when a number column is not a number."""
    contact: dict[str, Any] = {}
    for name, cell in zip(header, row, strict=False):
        value = cell.strip()
        if not value:
            continue
        if name in INTEGER_FIELDS:
            if not value.isdigit():
                return None
            contact[name] = int(value)
        else:
            contact[name] = value
    return contact
