"""Row -> contact rules and email checks (shared/constant_contact/contacts.py) at their
edges: the 50th character, the first and last valid month and day, the order the email checks run
in, a value cut at its limit, counts that add up over rows, and columns found by
name. Each case says what the README promises users; a rule off by one is a contact
rejected that should have gone, or one sent that Constant Contact drops."""

from __future__ import annotations

import pytest

from shared.constant_contact import contacts
from shared.constant_contact.contacts import (
    ContactMapper,
    _address_kind,
    check_email,
    parse_date,
    validate_mapping,
)
from shared.errors import ConfigError, InputError

FIFTY = "x" * 38 + "@example.com"  # 50 characters


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (FIFTY, None),
        ("  " + FIFTY.upper() + "\t", None),  # trimmed and lower-cased first
        ("y" + FIFTY, contacts.EMAIL_TOO_LONG),
        ("é" + FIFTY, contacts.EMAIL_TOO_LONG),  # too long is said before non-ASCII
        ("é" * 3 + "@example.com", contacts.NON_ASCII_EMAIL),
        ("éa@b", contacts.NON_ASCII_EMAIL),  # non-ASCII is said before invalid
        ("a@b.c", contacts.INVALID_EMAIL),  # a one-letter TLD
        ("a@b.co", None),
        ("first.last@sub.example.org", None),
        (".a@example.com", contacts.INVALID_EMAIL),
        ("a@example.com.", contacts.INVALID_EMAIL),
        ("a@example-.com", contacts.INVALID_EMAIL),
        ("a@ex-ample.com", None),
        ("!#$%&'*+/=?^_`{|}~-@example.com", None),
        ("a@example.com x", contacts.INVALID_EMAIL),
        ("\n", contacts.MISSING_EMAIL),
    ],
)
def test_email_rules_in_order(raw: str, reason: str | None) -> None:
    email, why = check_email(raw)
    assert why == reason
    assert email == raw.strip().lower()


COLUMNS = ["Email", "First", "Month", "Day", "Birthday", "Anniversary", "Note", "Phone"]


def mapper(**mapping: str) -> ContactMapper:
    return ContactMapper(COLUMNS, {"email": "Email", **mapping})


def row(email: str = "a@example.com", **values: str) -> list[str]:
    cells = dict.fromkeys(COLUMNS, "")
    cells["Email"] = email
    cells.update(values)
    return [cells[c] for c in COLUMNS]


def test_a_fifty_character_address_is_a_contact_and_fifty_one_is_not() -> None:
    m = mapper()
    assert m.map(row(" " + FIFTY.upper() + " ")) == {"email": FIFTY}
    assert m.email == FIFTY
    assert m.map(row("z" + FIFTY)) is None
    assert (m.reason, m.detail, m.email) == (contacts.EMAIL_TOO_LONG, "", "z" + FIFTY)


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        ("", contacts.MISSING_EMAIL),
        ("  ", contacts.MISSING_EMAIL),
        ("José@Example.com", contacts.NON_ASCII_EMAIL),
        (" Not An Email ", contacts.INVALID_EMAIL),
    ],
)
def test_a_rejected_row_keeps_the_address_as_given(email: str, reason: str) -> None:
    m = mapper(first_name="First")
    assert m.map(row(email, First="Ana")) is None
    assert (m.reason, m.detail) == (reason, "")
    assert m.email == email.strip()  # as given (trimmed), for the rejects file


def test_a_ragged_row_without_the_email_column() -> None:
    m = ContactMapper(["First", "Email"], {"email": "Email"})
    assert m.map(["Ana"]) is None
    assert (m.reason, m.detail, m.email) == (contacts.RAGGED_ROW, "1 fields, expected 2", "")
    assert m.map(["Ana", " B@Example.com ", "extra"]) is None
    assert (m.detail, m.email) == ("3 fields, expected 2", "B@Example.com")


def test_values_are_trimmed_empty_ones_left_out_long_ones_cut() -> None:
    m = mapper(first_name="First", **{"cf:note": "Note"}, phone="Phone")
    assert m.map(row(First="  Ana  ", Note=" ", Phone="")) == {
        "email": "a@example.com",
        "first_name": "Ana",
    }
    cut = m.map(row(First="x" * 49 + " yz", Note="n" * 255, Phone="1" * 50))
    assert cut == {
        "email": "a@example.com",
        "first_name": "x" * 49,  # cut at 50, then the trailing space trimmed
        "cf:note": "n" * 255,
        "phone": "1" * 50,
    }
    assert m.truncated == {"first_name": 1}
    m.map(row(First="f" * 51, Note="n" * 256, Phone="2" * 51))
    m.map(row(Note="m" * 300))
    assert m.truncated == {"first_name": 2, "cf:note": 2, "phone": 1}


@pytest.mark.parametrize(
    ("month", "day", "sent"),
    [
        ("1", "1", True),
        ("12", "31", True),
        (" 6 ", "15", True),
        ("0", "1", False),
        ("13", "1", False),
        ("1", "0", False),
        ("1", "32", False),
        ("1.5", "2", False),
        ("-1", "2", False),
        ("x", "2", False),
    ],
)
def test_birthday_month_and_day_bounds(month: str, day: str, sent: bool) -> None:
    m = mapper(birthday_month="Month", birthday_day="Day")
    contact = m.map(row(Month=month, Day=day))
    if sent:
        assert contact == {
            "email": "a@example.com",
            "birthday_month": int(month),
            "birthday_day": int(day),
        }
        assert m.invalid == {}
    else:
        assert contact == {"email": "a@example.com"}
        assert sum(m.invalid.values()) == 2  # the bad one, and the good one left alone


def test_invalid_values_are_counted_per_field_over_rows() -> None:
    m = mapper(birthday_month="Month", birthday_day="Day", anniversary="Anniversary")
    m.map(row(Month="13", Day="40", Anniversary="soon"))
    m.map(row(Month="2", Day="", Anniversary="2001-02-30"))
    m.map(row(Month="", Day="5", Anniversary=""))
    m.map(row(Month="", Day="", Anniversary="2001-02-28"))
    assert m.invalid == {"birthday_month": 2, "birthday_day": 2, "anniversary": 2}


def test_an_empty_date_does_not_hide_the_next_one() -> None:
    m = mapper(birthday="Birthday", anniversary="Anniversary")
    assert m.map(row(Birthday="", Anniversary="2015-06-01")) == {
        "email": "a@example.com",
        "anniversary": "2015-06-01",
    }
    assert m.map(row(Birthday="12/24/1990", Anniversary="")) == {
        "email": "a@example.com",
        "birthday_month": 12,
        "birthday_day": 24,
    }
    assert m.map(row(Birthday="bad", Anniversary="bad")) == {"email": "a@example.com"}
    assert m.map(row(Birthday="bad", Anniversary="2020-1-2")) == {
        "email": "a@example.com",
        "anniversary": "2020-01-02",
    }
    assert m.invalid == {"birthday": 2, "anniversary": 1}


@pytest.mark.parametrize(
    ("value", "date"),
    [
        ("2001-1-2", (2001, 1, 2)),
        ("2001/01/02 10:00", (2001, 1, 2)),
        ("1/2/2001", (2001, 1, 2)),
        ("12-31-1999T23:59", (1999, 12, 31)),
        ("2001-13-01", None),
        ("2001-02-30", None),
        ("02/30/2001", None),
        ("2001-1-2x", None),
        ("01-02-01", None),
        ("20011-1-2", None),
    ],
)
def test_dates_in_the_formats_constant_contact_reads(
    value: str, date: tuple[int, int, int] | None
) -> None:
    parsed = parse_date(value)
    assert (None if parsed is None else (parsed.year, parsed.month, parsed.day)) == date


def test_columns_are_found_by_name_then_without_regard_to_case() -> None:
    m = ContactMapper(["EMAIL", "email", "Name"], {"email": "email", "first_name": "name"})
    assert m.email_index == 1  # the exact name wins over a case-folded one
    assert m.map(["x@example.com", "y@example.com", "Ana"]) == {
        "email": "y@example.com",
        "first_name": "Ana",
    }
    with pytest.raises(InputError) as ambiguous:
        ContactMapper(["EMAIL", "Email"], {"email": "email"})
    assert str(ambiguous.value) == (
        'column "email" (mapped to email) is not in the file; its columns are: EMAIL, Email'
    )
    with pytest.raises(InputError, match=r"\(mapped to first_name\)"):
        ContactMapper(["Email"], {"email": "Email", "first_name": "First"})
    with pytest.raises(InputError, match=r"its columns are: \(none: the file is empty\)"):
        ContactMapper([], {"email": "Email"})


def test_every_mapped_field_finds_its_kind() -> None:
    m = ContactMapper(
        ["E", "A", "B", "C", "D", "F"],
        {
            "email": "E",
            "home_city": "A",
            "cf:tier": "B",
            "birthday_month": "C",
            "birthday_day": "D",
            "anniversary": "F",
        },
    )
    assert m.text == [("home_city", 1, 50), ("cf:tier", 2, 255)]
    assert m.numbers == [("birthday_month", 3, 12), ("birthday_day", 4, 31)]
    assert m.dates == [("anniversary", 5)]
    assert m.width == 6


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"email": "  "}, "the mapping needs an email column (--map email=COLUMN)"),
        ({"first_name": "F"}, "the mapping needs an email column (--map email=COLUMN)"),
        (
            {"email": "E", "cf:": "X"},
            "custom field 'cf:': the name after cf: must be 1-50 letters, digits or "
            "underscores (the custom field's name in Constant Contact)",
        ),
        (
            {"email": "E", "cf:" + "n" * 51: "X"},
            f"custom field 'cf:{'n' * 51}': the name after cf: must be 1-50 letters, digits or "
            "underscores (the custom field's name in Constant Contact)",
        ),
        (
            {"email": "E", "Email": "X"},
            "unknown Constant Contact field 'Email'; use cf:NAME or one of: "
            + ", ".join(sorted(contacts.KNOWN_FIELDS)),
        ),
        (
            {"email": "E", "birthday_month": "M"},
            "birthday_month and birthday_day must be mapped together",
        ),
        (
            {"email": "E", "birthday": "B", "birthday_month": "M"},
            "map either birthday (a date) or birthday_month and birthday_day",
        ),
    ],
)
def test_mappings_that_cannot_work_are_refused(mapping: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_mapping(mapping)
    assert str(caught.value) == message


def test_the_known_fields_are_listed_for_an_unknown_one() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_mapping({"email": "E", "shoe_size": "S"})
    listed = str(caught.value).partition("one of: ")[2].split(", ")
    assert listed == sorted(listed)
    assert {"email", "first_name", "home_country", "birthday_month", "anniversary"} <= set(listed)
    assert len(listed) == len(contacts.KNOWN_FIELDS)


def test_mappings_at_the_limits_are_fine() -> None:
    validate_mapping({"email": "E", **{f"cf:f{i}": "c" for i in range(25)}})
    validate_mapping({"email": "E", "cf:" + "n" * 50: "X", "cf:A_1": "Y"})
    validate_mapping({"email": "E", "phone": "a", "home_phone": "b", "mobile_phone": "c"})
    validate_mapping(
        {"email": "E", "street": "a", "home_zip": "b", "work_state": "c", "work_city": "d"}
    )
    validate_mapping({"email": "E", "birthday_month": "M", "birthday_day": "D"})
    validate_mapping({"email": "E", "birthday": "B", "anniversary": "A"})
    with pytest.raises(ConfigError, match="4 addresses mapped; Constant Contact takes at most 3"):
        validate_mapping(
            {"email": "E", "street": "a", "home_zip": "b", "work_state": "c", "other_city": "d"}
        )
    with pytest.raises(ConfigError, match="26 custom fields mapped; Constant Contact takes at"):
        validate_mapping({"email": "E", **{f"cf:f{i}": "c" for i in range(26)}})
    with pytest.raises(ConfigError, match="4 phone fields mapped; Constant Contact takes at"):
        validate_mapping({"email": "E", **{p: p for p in contacts.PHONE_FIELDS[:4]}})


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("street", ""),
        ("country", ""),
        ("home_street2", "home_"),
        ("work_zip", "work_"),
        ("other_state", "other_"),
        ("home_phone", None),
        ("home_", None),
        ("first_name", None),
        ("cf:street", None),
    ],
)
def test_address_kinds(target: str, kind: str | None) -> None:
    assert _address_kind(target) == kind
