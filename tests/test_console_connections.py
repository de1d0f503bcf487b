"""The connections pages' parts without a browser: the form and what the pages say
(shared/console/connection_pages.py), the account's name kept on the connection when
it connects (shared.exports.authorizing, the catalog), and a connect started on the
console ending back on its page through the real OAuth callback. The pages in a
browser: tests/browser/test_console_connections.py."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import azure.functions as func
import pytest

from functions import http_api
from functions.console import connections as pages
from sandbox.api_account import SUMMARY
from shared.console.connection_pages import (
    ConnectionForm,
    ConnectionView,
    NameTaken,
    save_form,
)
from shared.console.forms import Form
from shared.console.safety import FORM_COOKIE, FORM_FIELD
from shared.console.wording import when
from shared.constant_contact.client import ConstantContactClient
from shared.errors import ConfigError, RemoteError
from shared.exports.access import Caller
from shared.exports.account import AccountAccess
from shared.exports.authorizing import read_account_name
from shared.exports.catalog import (
    Catalog,
    Connection,
    ConnectionStatus,
    PrivacyConsent,
    connection_from_request,
)
from shared.storage.documents import FolderDocuments
from tests.support.function_harness import AppEnv, http_request, response_json
from tests.support.http_calls import ADMIN, call, consent, put_connection
from tests.support.sandbox_service import RunningSandbox

ORGANIZATION = str(SUMMARY["organization_name"])
ADMIN_CALLER = Caller("the-admin", frozenset({"admin"}))


def test_the_form_reads_ticked_and_typed_roles_and_asks_what_the_api_is_sent() -> None:
    sent = Form.parse(
        urlencode(
            [
                ("name", "crm"),
                ("display_name", " Marketing "),
                ("role", "marketing"),
                ("other_roles", "sales, ops;  marketing"),
                ("agree", "yes"),
                ("etag", "e1"),
            ]
        ).encode()
    )
    form = ConnectionForm.read(sent)
    assert form.name == "crm"
    assert form.body() == {
        "display_name": "Marketing",
        "roles": ["marketing", "sales", "ops"],
        "privacy_consent": {"accepted": True},
    }
    assert ConnectionForm.read(Form.parse(b"display_name=x"), "crm").body()["privacy_consent"] == {
        "accepted": False
    }  # an unticked I agree withdraws
    choices = ConnectionForm(roles=("Marketing",)).choices(["contributor", "admin", "marketing"])
    assert [(c.role, c.checked) for c in choices] == [("contributor", False), ("marketing", True)]


def test_what_a_connection_page_says() -> None:
    connection = Connection("crm", "CRM", roles=("marketing",))
    fresh = ConnectionView(connection, ConnectionStatus.NOT_CONNECTED, "e")
    assert (fresh.status_words, fresh.account, fresh.roles_words) == (
        "Not connected",
        "None yet",
        "Admins, and marketing",
    )
    assert fresh.consent_words.startswith("Not agreed")
    assert fresh.attention == "accept the data privacy and compliance terms"
    connected = Connection(
        "crm",
        "CRM",
        consent=PrivacyConsent("the-admin", "2026-12-04T22:14:05Z"),
        status=ConnectionStatus.CONNECTED,
        connected_at="2026-12-04T22:15:00Z",
    )
    unnamed = ConnectionView(connected, ConnectionStatus.CONNECTED, "e")
    assert unnamed.account == "Connected on 2026-12-04 22:15 UTC"
    assert unnamed.roles_words == "Admins only"
    assert unnamed.consent_words == "Agreed on 2026-12-04 22:14 UTC"
    assert unnamed.attention is None
    named = Connection("crm", "CRM", status=ConnectionStatus.CONNECTED, account_name="Acme Inc")
    assert ConnectionView(named, ConnectionStatus.CONNECTED, "e").account == "Acme Inc"
    lapsed = ConnectionView(named, ConnectionStatus.NEEDS_REAUTHORISATION, "e")
    assert lapsed.status_words == "Needs re-authorisation"
    assert when("not a time") == ""  # unreadable: said as unknown, never echoed
    assert when(None) == ""


async def test_the_account_name_is_the_servers_own_and_follows_each_connect(
    tmp_path: Path,
) -> None:
    catalog = Catalog(FolderDocuments(tmp_path / "catalog"))
    await save_form(catalog, ADMIN_CALLER, ConnectionForm("crm", "CRM"), new=True)
    with pytest.raises(NameTaken, match="exists already"):
        await save_form(catalog, ADMIN_CALLER, ConnectionForm("crm", "Again"), new=True)
    with pytest.raises(NameTaken, match="add form"):
        await save_form(catalog, ADMIN_CALLER, ConnectionForm("new", "New"), new=True)
    marked = await catalog.mark_connected("crm", account_name="Acme Inc")
    stored = await catalog.require_connection("crm")
    assert stored.value == marked
    assert stored.value.to_json()["account_name"] == "Acme Inc"
    edited = connection_from_request(
        "crm", {"display_name": "CRM 2"}, principal_id="x", existing=stored.value
    )
    assert edited.account_name == "Acme Inc"  # an edit keeps it
    with pytest.raises(ConfigError, match="unknown field"):
        connection_from_request(
            "crm", {"account_name": "Mine"}, principal_id="x", existing=stored.value
        )
    again = await catalog.mark_connected("crm")  # reconnected, the name not read
    assert again.account_name is None


class _Accounts:
    """An AccountAccess whose client answers the summary, or fails as told."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure

    @asynccontextmanager
    async def client(self, _connection: str) -> AsyncIterator[ConstantContactClient]:
        if self.failure is not None:
            raise self.failure
        client = cast(ConstantContactClient, self)
        yield client

    async def organization_name(self) -> str | None:
        return "x" * 300


async def test_the_account_name_is_read_best_effort(caplog: pytest.LogCaptureFixture) -> None:
    name = await read_account_name(cast(AccountAccess, _Accounts()), "crm")
    assert name == "x" * 200  # bounded
    refusal = RemoteError("GET /account/summary: 403 for owner@northwind.example.com", status=403)
    with caplog.at_level(logging.WARNING):
        assert await read_account_name(cast(AccountAccess, _Accounts(refusal)), "crm") is None
    assert "organization name was not read" in caplog.text
    assert "owner@northwind.example.com" not in caplog.text


def console_request(method: str, path: str, name: str, fields: dict[str, str]) -> func.HttpRequest:
    """A form the console's own page sent: the form token in the cookie and the form."""
    token = "t" * 43
    body = urlencode({FORM_FIELD: token, **fields}).encode()
    headers = {
        **ADMIN,
        "Cookie": f"{FORM_COOKIE}={token}",
        "Origin": "https://ccexport-test.azurewebsites.net",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return http_request(method, path, route_params={"name": name}, headers=headers, body=body)


async def console_call(handler: Any, req: func.HttpRequest) -> func.HttpResponse:
    response: func.HttpResponse = await handler.build().get_user_function()(req=req)
    return response


@pytest.mark.azurite
async def test_a_connect_started_on_the_console_ends_on_its_page_with_the_account(
    app_env: AppEnv, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for setting, value in sandbox.ctct_settings().items():
        monkeypatch.setenv(setting, value)
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    req = console_request("POST", "console/connections/acme/connect", "acme", {})
    started = await console_call(pages.console_connection_connect, req)
    assert started.status_code == 200, started.get_body()
    cookie = str(started.headers["Set-Cookie"])
    assert cookie.startswith("ccexport_connect=")
    assert "Path=/api/oauth/callback" in cookie
    browser = cookie.split(";", 1)[0]
    assert browser.endswith(".console")
    page = started.get_body().decode()
    [authorize] = [
        html.unescape(href)
        for href in re.findall(r'href="([^"]+)"', page)
        if html.unescape(href).startswith(sandbox.authorize_url)
    ]
    assert "account_read" in dict(parse_qsl(urlsplit(authorize).query))["scope"].split()

    async with (
        aiohttp.ClientSession() as session,
        session.get(authorize, allow_redirects=False) as approved,
    ):
        sent = dict(parse_qsl(urlsplit(approved.headers["Location"]).query))
    back = await call(
        http_api.oauth_callback, "GET", "oauth/callback", params=sent, headers={"Cookie": browser}
    )
    assert back.status_code == 303
    assert back.headers["Location"] == "/api/console/connections/acme?done=connected"
    assert back.headers["Referrer-Policy"] == "no-referrer"
    got = response_json(await call(http_api.connection_item, "GET", "connections/acme"))
    assert (got["status"], got["account_name"]) == ("connected", ORGANIZATION)

    replay = await call(
        http_api.oauth_callback, "GET", "oauth/callback", params=sent, headers={"Cookie": browser}
    )
    assert replay.status_code == 400
    text = replay.get_body().decode()
    assert '<a href="/api/console/connections">Back to the connections</a>' in text
    assert "Connect on the connection&#x27;s page in the console" in text
