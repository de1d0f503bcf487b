"""Lists by name and custom fields on the command line, as a user runs them: `ccexport
lists` (and `--create`), list names in `check` and `run`, the custom-field preflight and
`--create-fields` / `"create_custom_fields"`; real processes, the sandbox over real HTTP
(a fresh one per test: lists and custom fields belong to the whole account)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bench.sample import EXPORT, RUN, TABLE, write_sample
from tests.support.ctct_support import run_cli
from tests.support.sample_emails import expected_emails as sample_emails
from tests.support.sandbox_api import Api, api_for, people
from tests.support.sandbox_service import RunningSandbox, cli_env

Factory = Callable[..., RunningSandbox]
FAST = {"rate_limit": 0, "daily_quota": 0, "token_rate_limit": 0, "activity_delay": 0}
IMPORTS = "POST /v3/activities/contacts_json_import"
ROWS = 300


@dataclass
class Account:
    sandbox: RunningSandbox
    env: dict[str, str]
    home: Path

    def cli(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        done = run_cli(list(args), self.env, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def imports_sent(self) -> int:
        return sum(self.sandbox.requests(IMPORTS).values())


@pytest.fixture
def account(sandbox_factory: Factory, tmp_path: Path) -> Account:
    """A fresh sandbox account, connected as `ccexport connect` does it."""
    sandbox = sandbox_factory(**FAST)
    home = tmp_path / "home"
    env = cli_env(sandbox, home)
    connected = run_cli(["connect", "--port", "0"], env)
    assert connected.returncode == 0, connected.stderr
    return Account(sandbox, env, home)


@pytest.fixture
async def api(account: Account) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield api_for(account.sandbox, session)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    write_sample(out, ROWS, parts=2, bad_every=97, duplicate_every=101)
    return out


def source_of(sample: Path) -> str:
    return str(sample / EXPORT / TABLE / RUN)


def expected_emails(sample: Path) -> list[str]:
    return sorted(sample_emails(sample))


def one_error_line(code: int, stderr: str) -> str:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- ccexport lists -------------------------------------------------------------------------


async def test_lists_shows_names_ids_and_members_and_create_finds_an_existing_list(
    account: Account, api: Api
) -> None:
    sandbox = account.sandbox
    news = sandbox.create_list("Newsletter NL")
    vip = sandbox.create_list("VIP customers")
    await api.import_json([news], people(1203, domain="lists.example.com"))

    code, out, err = account.cli("lists")
    assert code == 0, err
    lines = out.splitlines()
    assert re.fullmatch(r"name +id +members", lines[0])
    assert re.fullmatch(rf"Newsletter NL +{news} +1,203", lines[1])
    assert re.fullmatch(rf"VIP customers +{vip} +0", lines[2])
    assert lines[3:] == ["2 lists in the account of connection 'default'"]
    assert "ContactList" not in out
    assert "None" not in out

    code, out, err = account.cli("lists", "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "connection": "default",
        "lists": [
            {"list_id": news, "name": "Newsletter NL", "membership_count": 1203},
            {"list_id": vip, "name": "VIP customers", "membership_count": 0},
        ],
    }

    code, out, err = account.cli("lists", "--create", "Spring promo")
    assert code == 0, err
    made = re.fullmatch(r"created list 'Spring promo': (\S+)\n", out)
    assert made is not None, out
    promo = made.group(1)
    assert sandbox.stats()["lists"] == 3

    code, out, err = account.cli("lists", "--create", "Newsletter NL")
    assert code == 0, err
    assert out == (
        f"list 'Newsletter NL' already exists: {news} (1,203 members); nothing was created\n"
    )
    code, out, err = account.cli("lists", "--create", "Spring promo", "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "connection": "default",
        "created": False,
        "list": {"list_id": promo, "name": "Spring promo", "membership_count": 0},
    }
    assert sandbox.stats()["lists"] == 3

    line = one_error_line(*account.cli("lists", "--create", news)[::2])
    assert line == f"ccexport: error: '{news}' is a list id; a new list needs a name"
    unknown = account.cli("lists", "--connection", "nobody")
    assert unknown[0] == 1
    assert "connection 'nobody' needs to be reconnected" in unknown[2]


# --- list names in check and run ---------------------------------------------------------------


def test_check_takes_list_names_and_names_the_close_matches(account: Account) -> None:
    sandbox = account.sandbox
    news = sandbox.create_list("Newsletter NL")
    upper, lower = sandbox.create_list("VIP"), sandbox.create_list("vip")

    code, out, err = account.cli("check", "--list-id", "Newsletter NL")
    assert code == 0, err
    assert out.startswith("ok: connection 'default' has a valid access token (until ")
    assert out.rstrip().endswith(f"and list {news} exists (Newsletter NL)")
    code, out, err = account.cli(
        "check", "--list-id", "newsletter nl", "--list-id", upper, "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert [lst["list_id"] for lst in report["lists"]] == [news, upper]
    assert report["list_names"] == {"newsletter nl": news}  # only case differs: one match

    line = one_error_line(*account.cli("check", "--list-id", "Newsleter NL")[::2])
    assert line == (
        "ccexport: error: no list named 'Newsleter NL' in the account of connection "
        "'default'; close matches: 'Newsletter NL'"
    )
    line = one_error_line(*account.cli("check", "--list-id", "Vip")[::2])
    assert line == (
        "ccexport: error: list name 'Vip' is ambiguous in the account of connection "
        f"'default': it matches 'VIP' ({upper}), 'vip' ({lower}); give the list's id instead"
    )
    line = one_error_line(*account.cli("check", "--list-id", "Quarterly report")[::2])
    assert line.endswith("no list has a similar name (`ccexport lists` shows them all)")
    missing = str(uuid.uuid4())
    line = one_error_line(*account.cli("check", "--list-id", missing, "--list-id", "Nope")[::2])
    assert line.startswith(
        f"ccexport: error: list {missing} does not exist in the account of connection "
        "'default'; no list named 'Nope'"
    )


def test_run_sends_to_lists_given_by_name(account: Account, sample: Path) -> None:
    sandbox = account.sandbox
    news = sandbox.create_list("Newsletter NL")
    vip = sandbox.create_list("VIP")
    code, out, err = account.cli(
        "run", source_of(sample), "--list-id", "Newsletter NL", "--list-id", "vip",
        "--map", "email=PrimaryEmail", "--json", "--poll-seconds", "0.2",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["status"] == "completed"
    assert sorted(sandbox.members(news)) == expected_emails(sample)
    assert sorted(sandbox.members(vip)) == expected_emails(sample)
    for body in sandbox.imports(news):  # the bodies carried the ids, never the names
        assert body["list_ids"] == [news, vip]


def test_run_refuses_an_unknown_list_name_before_anything(account: Account, sample: Path) -> None:
    account.sandbox.create_list("Newsletter NL")
    line = one_error_line(
        *account.cli(
            "run", source_of(sample), "--list-id", "Newsletters", "--map", "email=PrimaryEmail"
        )[::2]
    )
    assert line == (
        "ccexport: error: no list named 'Newsletters' in the account of connection 'default'; "
        "close matches: 'Newsletter NL'"
    )
    assert account.imports_sent() == 0
    assert not (account.home / "runs").exists()


# --- custom fields -------------------------------------------------------------------------------


def test_check_verifies_mapped_custom_fields_and_creates_the_missing_ones(
    account: Account, tmp_path: Path
) -> None:
    sandbox = account.sandbox
    news = sandbox.create_list("Newsletter NL")
    for label in ("region", "tier_2", "tier", "Favourite colour"):
        sandbox.create_custom_field(label)

    line = one_error_line(
        *account.cli("check", "--list-id", news, "--map", "cf:tierr=Tier", "--map", "cf:tier=T")[
            ::2
        ]
    )
    assert line == (
        "ccexport: error: custom field cf:tierr does not exist in the account of connection "
        "'default' (its custom fields, closest first: tier, tier_2, Favourite_colour, region); "
        "create it in Constant Contact, or let ccexport create them: --create-fields, or "
        '"create_custom_fields": true in the definition'
    )
    code, out, err = account.cli("check", "--list-id", news, "--map", "cf:tier=Tier")
    assert code == 0, err
    assert out.rstrip().endswith("; custom fields cf:tier exist")

    code, out, err = account.cli(
        "check", "--list-id", news, "--map", "cf:tier=Tier", "--map", "cf:loyalty=Points",
        "--create-fields", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["custom_fields"] == {
        "checked": ["tier", "loyalty"],
        "created": ["loyalty"],
    }
    assert sandbox.stats()["custom_fields"] == 5
    config = tmp_path / "export.json"
    config.write_text(
        json.dumps(
            {
                "list_ids": ["Newsletter NL"],
                "mapping": {"email": "Mail", "cf:loyalty": "Points", "cf:segment_code": "Code"},
                "create_custom_fields": True,
            }
        )
    )
    code, out, err = account.cli("check", "--config", str(config))
    assert code == 0, err
    assert out.rstrip().endswith(
        "custom fields cf:loyalty, cf:segment_code exist (created now: cf:segment_code)"
    )
    assert sandbox.stats()["custom_fields"] == 6


def test_creating_past_the_account_limit_of_100_is_refused(account: Account) -> None:
    sandbox = account.sandbox
    news = sandbox.create_list("Newsletter NL")
    for i in range(99):
        sandbox.create_custom_field(f"field_{i}")
    line = one_error_line(
        *account.cli(
            "check", "--list-id", news, "--map", "cf:points=P", "--map", "cf:level=L",
            "--create-fields",
        )[::2]
    )  # fmt: skip
    assert line == (
        "ccexport: error: creating custom field(s) cf:points, cf:level would give the account "
        "of connection 'default' 101 custom fields; Constant Contact allows 100 (it has 99): "
        "delete unused ones in Constant Contact or map fewer"
    )
    assert sandbox.stats()["custom_fields"] == 99
    line = one_error_line(
        *account.cli("check", "--list-id", news, "--map", "cf:FIELD_1=P", "--create-fields")[::2]
    )
    assert "names that differ only in case cannot both exist" in line
    assert "cf:FIELD_1 (the account has cf:field_1)" in line


async def test_run_stops_on_a_missing_custom_field_and_creates_it_when_asked(
    account: Account, api: Api, sample: Path, tmp_path: Path
) -> None:
    sandbox = account.sandbox
    news = sandbox.create_list("Newsletter NL")
    sandbox.create_custom_field("tier")
    base = ["run", source_of(sample), "--list-id", "Newsletter NL", "--map", "email=PrimaryEmail",
            "--map", "cf:tier=Tier", "--map", "cf:city=City", "--poll-seconds", "0.2"]  # fmt: skip

    line = one_error_line(*account.cli(*base)[::2])
    assert line.startswith(
        "ccexport: error: custom field cf:city does not exist in the account of connection "
        "'default' (its custom fields, closest first: tier); "
    )
    assert account.imports_sent() == 0

    code, out, err = account.cli(*base, "--create-fields", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"
    assert sandbox.stats()["custom_fields"] == 2
    assert sorted(sandbox.members(news)) == expected_emails(sample)
    first = expected_emails(sample)[0]
    found = await api.get(f"/contacts?email={first}&include=custom_fields")
    values = [f["value"] for f in found.body["contacts"][0]["custom_fields"]]
    assert len(values) == 2  # cf:tier and cf:city were stored, not left out
    assert values[0] in {"gold", "silver", "bronze"}

    # A definition that creates its own fields, with its list by name.
    config = tmp_path / "promo.json"
    config.write_text(
        json.dumps(
            {
                "name": "promo",
                "list_ids": ["Spring promo"],
                "mapping": {"email": "PrimaryEmail", "cf:first": "FirstName"},
                "create_custom_fields": True,
            }
        )
    )
    promo = sandbox.create_list("Spring promo")
    code, out, err = account.cli(
        "run", source_of(sample), "--config", str(config), "--json", "--poll-seconds", "0.2"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["status"] == "completed"
    assert report["export"] == "promo"
    assert sandbox.stats()["custom_fields"] == 3
    assert sorted(sandbox.members(promo)) == expected_emails(sample)
