"""Turning a segment row into a Constant Contact import contact, or a reason it cannot be one.

The rules, which the README repeats for users:

- Email: trimmed and lower-cased; it must be ASCII, at most 50 characters (the JSON
  import's limit) and look like local@domain.tld. Otherwise the row is rejected.
- Duplicates: the first row with an address is the contact; later rows with the same
  address (compared case-insensitively) are counted as duplicates and listed in the
  rejects file with the row they duplicate. Their values are not mixed into the first:
  two profiles sharing an inbox are two people, and half of each is neither.
- Too long: a value longer than its field allows is cut to the limit and counted per
  field in the summary (``truncated``); the contact is still sent.
- Unusable: a birthday or anniversary that is not a date is left out and counted per
  field (``invalid_values``); the contact is still sent.
- Empty values are not sent, so they never blank out what Constant Contact holds.

This module is the hot path of ``prepare``: one ``ContactMapper.map`` call per row.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from shared.errors import ConfigError, InputError

EMAIL = "email"
EMAIL_MAX = 50
CUSTOM_PREFIX = "cf:"
CUSTOM_VALUE_MAX = 255
CUSTOM_NAME_MAX = 50
MAX_CUSTOM_FIELDS = 25
MAX_PHONES = 3
MAX_ADDRESSES = 3

_ADDRESS_PARTS = {"street": 255, "street2": 255, "city": 50, "state": 50, "zip": 50, "country": 50}
_ADDRESS_KINDS = ("", "home_", "work_", "other_")
PHONE_FIELDS = ("phone", "home_phone", "work_phone", "mobile_phone", "other_phone")

# Plain text fields of JsonImportContact and their maxLength (contract/constant-contact-v3.yaml).
# The official API description names one of them "home country" (with a space); the
# documented field and the CSV column are home_country, which is what we send.
TEXT_FIELDS: dict[str, int] = {
    "first_name": 50,
    "last_name": 50,
    "job_title": 50,
    "company_name": 50,
    **dict.fromkeys(PHONE_FIELDS, 50),
    **{f"{kind}{part}": limit for kind in _ADDRESS_KINDS for part, limit in _ADDRESS_PARTS.items()},
}
DATE_FIELDS = ("birthday", "anniversary")  # a date column; birthday becomes month + day
NUMBER_FIELDS = {"birthday_month": 12, "birthday_day": 31}
KNOWN_FIELDS = frozenset({EMAIL, *TEXT_FIELDS, *DATE_FIELDS, *NUMBER_FIELDS})

_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_]{1,50}")
# Practical address syntax (RFC 5322 dot-atom local part, DNS host names, alphabetic TLD).
# Hand-written because a full validator costs several times what this hot path can spend
# on a row.
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_match_email = _EMAIL_RE.fullmatch
_YMD = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[T ].*)?")
_MDY = re.compile(r"(\d{1,2})[-/](\d{1,2})[-/](\d{4})(?:[T ].*)?")

# Reject reason codes (the rejects file's "reason" column).
MISSING_EMAIL = "missing_email"
INVALID_EMAIL = "invalid_email"
EMAIL_TOO_LONG = "email_too_long"
NON_ASCII_EMAIL = "non_ascii_email"
RAGGED_ROW = "ragged_row"
UNBALANCED_QUOTE = "unbalanced_quote"
NUL_CHARACTER = "nul_character"
DUPLICATE = "duplicate"


def validate_mapping(mapping: Mapping[str, str]) -> None:
    """Check a field mapping (Constant Contact field -> column) before any file is read."""
    if EMAIL not in mapping or not str(mapping[EMAIL]).strip():
        raise ConfigError("the mapping needs an email column (--map email=COLUMN)")
    custom = [t for t in mapping if t.startswith(CUSTOM_PREFIX)]
    for target in mapping:
        if target.startswith(CUSTOM_PREFIX):
            if not _CUSTOM_NAME.fullmatch(target[len(CUSTOM_PREFIX) :]):
                raise ConfigError(
                    f"custom field {target!r}: the name after cf: must be 1-50 letters, "
                    "digits or underscores (the custom field's name in Constant Contact)"
                )
        elif target not in KNOWN_FIELDS:
            known = ", ".join(sorted(KNOWN_FIELDS))
            raise ConfigError(
                f"unknown Constant Contact field {target!r}; use cf:NAME or one of: {known}"
            )
    if len(custom) > MAX_CUSTOM_FIELDS:
        raise ConfigError(f"{len(custom)} custom fields mapped; Constant Contact takes at most 25")
    phones = [t for t in mapping if t in PHONE_FIELDS]
    if len(phones) > MAX_PHONES:
        raise ConfigError(f"{len(phones)} phone fields mapped; Constant Contact takes at most 3")
    kinds = {kind for kind in map(_address_kind, mapping) if kind is not None}
    if len(kinds) > MAX_ADDRESSES:
        raise ConfigError(f"{len(kinds)} addresses mapped; Constant Contact takes at most 3")
    if ("birthday" in mapping) and ({"birthday_month", "birthday_day"} & mapping.keys()):
        raise ConfigError("map either birthday (a date) or birthday_month and birthday_day")
    if len({"birthday_month", "birthday_day"} & mapping.keys()) == 1:
        raise ConfigError("birthday_month and birthday_day must be mapped together")


def _address_kind(target: str) -> str | None:
    """'' for the primary address fields, 'home_'/'work_'/'other_' for the others."""
    if target in _ADDRESS_PARTS:
        return ""
    for kind in _ADDRESS_KINDS[1:]:
        if target.startswith(kind) and target[len(kind) :] in _ADDRESS_PARTS:
            return kind
    return None


def _find_column(columns: Sequence[str], wanted: str, target: str) -> int:
    try:
        return columns.index(wanted)
    except ValueError:
        pass
    folded = [i for i, c in enumerate(columns) if c.lower() == wanted.lower()]
    if len(folded) == 1:
        return folded[0]
    shown = ", ".join(columns) if columns else "(none: the file is empty)"
    raise InputError(
        f'column "{wanted}" (mapped to {target}) is not in the file; its columns are: {shown}'
    )


def parse_date(value: str) -> dt.date | None:
    """A date in one of Constant Contact's formats (year first, or US month/day/year)."""
    match = _YMD.fullmatch(value)
    if match:
        y, m, d = match.groups()
    else:
        match = _MDY.fullmatch(value)
        if not match:
            return None
        m, d, y = match.groups()
    try:
        return dt.date(int(y), int(m), int(d))
    except ValueError:
        return None


def check_email(raw: str) -> tuple[str, str | None]:
    """The normalised address and None, or the address as given and a reject reason."""
    email = raw.strip().lower()
    if not email:
        return email, MISSING_EMAIL
    if len(email) > EMAIL_MAX:
        return email, EMAIL_TOO_LONG
    if not email.isascii():
        return email, NON_ASCII_EMAIL
    if _EMAIL_RE.fullmatch(email) is None:
        return email, INVALID_EMAIL
    return email, None


class ContactMapper:
    """Maps rows of one segment to contacts, counting what it had to cut or leave out."""

    def __init__(self, columns: Sequence[str], mapping: Mapping[str, str]) -> None:
        validate_mapping(mapping)
        cols = list(columns)
        self.width = len(cols)
        self.email_index = _find_column(cols, mapping[EMAIL], EMAIL)
        self.text: list[tuple[str, int, int]] = []
        self.numbers: list[tuple[str, int, int]] = []
        self.dates: list[tuple[str, int]] = []
        for target, column in mapping.items():
            if target == EMAIL:
                continue
            index = _find_column(cols, column, target)
            if target in TEXT_FIELDS:
                self.text.append((target, index, TEXT_FIELDS[target]))
            elif target.startswith(CUSTOM_PREFIX):
                self.text.append((target, index, CUSTOM_VALUE_MAX))
            elif target in NUMBER_FIELDS:
                self.numbers.append((target, index, NUMBER_FIELDS[target]))
            else:
                self.dates.append((target, index))
        self.truncated: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        # Why the last row gave no contact (set only then, to keep the fast path lean).
        self.email = ""
        self.reason: str | None = None
        self.detail = ""

    def map(self, values: list[str]) -> dict[str, Any] | None:
        """The contact for a row, or None with ``reason``, ``detail`` and ``email`` set."""
        if len(values) != self.width:
            index = self.email_index
            self.email = values[index].strip() if index < len(values) else ""
            self.reason, self.detail = RAGGED_ROW, f"{len(values)} fields, expected {self.width}"
            return None
        email = values[self.email_index].strip().lower()
        # Fast path first; check_email names the reason only for the rare bad address.
        if not (0 < len(email) <= EMAIL_MAX and email.isascii() and _match_email(email)):
            self.email = values[self.email_index].strip()
            self.reason, self.detail = check_email(email)[1], ""
            return None
        contact: dict[str, Any] = {EMAIL: email}
        for target, index, limit in self.text:
            value = values[index].strip()
            if value:
                if len(value) > limit:
                    value = value[:limit].rstrip()
                    self.truncated[target] += 1
                contact[target] = value
        if self.numbers:
            self._map_numbers(values, contact)
        if self.dates:
            self._map_dates(values, contact)
        self.email = email
        return contact

    def _map_numbers(self, values: list[str], contact: dict[str, Any]) -> None:
        found: dict[str, int] = {}
        for target, index, top in self.numbers:
            value = values[index].strip()
            if value:
                if value.isdigit() and 1 <= int(value) <= top:
                    found[target] = int(value)
                else:
                    self.invalid[target] += 1
        if len(found) == 2:  # each requires the other
            contact.update(found)
        elif found:
            for target in found:
                self.invalid[target] += 1

    def _map_dates(self, values: list[str], contact: dict[str, Any]) -> None:
        for target, index in self.dates:
            value = values[index].strip()
            if not value:
                continue
            date = parse_date(value)
            if date is None:
                self.invalid[target] += 1
            elif target == "birthday":
                contact["birthday_month"] = date.month
                contact["birthday_day"] = date.day
            else:
                contact[target] = date.isoformat()
