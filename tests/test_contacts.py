"""Mapping rows to contacts: email rules, limits, dates, and mapping validation."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.constant_contact import contacts
from shared.constant_contact.contacts import (
    ContactMapper,
    check_email,
    parse_date,
    validate_mapping,
)
from shared.errors import ConfigError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ann.Lee+news@Example.co.uk ", ("ann.lee+news@example.co.uk", None)),
        ("o'brien@example.ie", ("o'brien@example.ie", None)),
        ("", ("", contacts.MISSING_EMAIL)),
        ("   ", ("", contacts.MISSING_EMAIL)),
        ("no-at-sign.example.com", ("no-at-sign.example.com", contacts.INVALID_EMAIL)),
        ("two@@example.com", ("two@@example.com", contacts.INVALID_EMAIL)),
        ("a@b", ("a@b", contacts.INVALID_EMAIL)),
        ("dot.@example.com", ("dot.@example.com", contacts.INVALID_EMAIL)),
        ("a..b@example.com", ("a..b@example.com", contacts.INVALID_EMAIL)),
        ("a@-example.com", ("a@-example.com", contacts.INVALID_EMAIL)),
        ("a b@example.com", ("a b@example.com", contacts.INVALID_EMAIL)),
        ("a@example.c0m", ("a@example.c0m", contacts.INVALID_EMAIL)),
        ("josé@example.com", ("josé@example.com", contacts.NON_ASCII_EMAIL)),
        ("a@bücher.de", ("a@bücher.de", contacts.NON_ASCII_EMAIL)),
    ],
)
def test_check_email(raw: str, expected: tuple[str, str | None]) -> None:
    assert check_email(raw) == expected


def test_email_length_limit_is_fifty() -> None:
    assert len("x" * 38 + "@example.com") == 50
    assert check_email("x" * 38 + "@example.com")[1] is None
    assert check_email("x" * 39 + "@example.com")[1] == contacts.EMAIL_TOO_LONG


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1984-03-07", dt.date(1984, 3, 7)),
        ("1984/3/7", dt.date(1984, 3, 7)),
        ("03/07/1984", dt.date(1984, 3, 7)),  # US month/day, as Constant Contact reads it
        ("3-7-1984", dt.date(1984, 3, 7)),
        ("1984-03-07T00:00:00Z", dt.date(1984, 3, 7)),
        ("2000-02-29", dt.date(2000, 2, 29)),
        ("1999-02-29", None),
        ("13/01/1984", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_parse_date(value: str, expected: dt.date | None) -> None:
    assert parse_date(value) == expected


COLS = ["Email", "First", "Bday", "Month", "Day", "Anniv", "Tier", "Street"]


def test_mapper_maps_dates_numbers_custom_fields_and_cuts_long_values() -> None:
    mapper = ContactMapper(
        COLS,
        {"email": "Email", "first_name": "First", "birthday": "Bday", "anniversary": "Anniv",
         "cf:tier": "Tier", "street": "Street"},
    )  # fmt: skip
    row = ["A@Example.com", "F" * 51, "1990-12-24", "", "", "2015-6-1", "T" * 300, "S" * 10]
    assert mapper.map(row) == {
        "email": "a@example.com",
        "first_name": "F" * 50,
        "birthday_month": 12,
        "birthday_day": 24,
        "anniversary": "2015-06-01",
        "cf:tier": "T" * 255,
        "street": "S" * 10,
    }
    assert mapper.truncated == {"first_name": 1, "cf:tier": 1}
    bad = ["b@example.com", "", "someday", "", "", "later", "", ""]
    assert mapper.map(bad) == {"email": "b@example.com"}
    assert mapper.invalid == {"birthday": 1, "anniversary": 1}


def test_birthday_month_and_day_must_both_be_valid() -> None:
    mapper = ContactMapper(
        COLS, {"email": "Email", "birthday_month": "Month", "birthday_day": "Day"}
    )
    row = ["a@example.com", "", "", "7", "31", "", "", ""]
    assert mapper.map(row) == {"email": "a@example.com", "birthday_month": 7, "birthday_day": 31}
    assert mapper.map(["a@example.com", "", "", "7", "", "", "", ""]) == {"email": "a@example.com"}
    assert mapper.map(["a@example.com", "", "", "13", "1", "", "", ""]) == {
        "email": "a@example.com"
    }
    assert mapper.invalid == {"birthday_month": 2, "birthday_day": 1}


def test_ragged_row_is_rejected_with_its_shape() -> None:
    mapper = ContactMapper(COLS, {"email": "Email"})
    assert mapper.map(["a@example.com", "x"]) is None
    assert (mapper.reason, mapper.detail, mapper.email) == (
        contacts.RAGGED_ROW, "2 fields, expected 8", "a@example.com")  # fmt: skip


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"first_name": "F"}, "needs an email column"),
        ({"email": "E", "shoe_size": "S"}, "unknown Constant Contact field 'shoe_size'"),
        ({"email": "E", "cf:bad name": "S"}, "custom field 'cf:bad name'"),
        ({"email": "E", **{f"cf:f{i}": "c" for i in range(26)}}, "26 custom fields"),
        (
            {"email": "E", "phone": "a", "home_phone": "b", "work_phone": "c", "mobile_phone": "d"},
            "4 phone fields",
        ),
        (
            {"email": "E", "city": "a", "home_city": "b", "work_city": "c", "other_zip": "d"},
            "4 addresses",
        ),
        ({"email": "E", "birthday": "B", "birthday_day": "D"}, "either birthday"),
        ({"email": "E", "birthday_day": "D"}, "mapped together"),
    ],
)
def test_validate_mapping_rejects(mapping: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_mapping(mapping)


def test_three_addresses_and_home_country_are_fine() -> None:
    validate_mapping({"email": "E", "street": "a", "home_country": "b", "work_city": "c"})
