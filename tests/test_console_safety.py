"""The console's pages are safe before they are useful: anonymous at the function
level (a browser has no function key), they answer only behind the platform's
authentication and to a signed-in caller, carry strict headers, and refuse forged
forms. The pages themselves are tested in a browser (tests/browser/)."""

from __future__ import annotations

from typing import Any

import pytest

from functions.console import home, statics
from functions.console.pages import console_path
from shared.console import safety
from shared.console.pages import static_file
from tests.support.app_index import http_triggers
from tests.support.function_harness import AppEnv, DurableFake, http_request, principal
from tests.support.http_calls import ADMIN, call

ORIGIN = "https://ccexport-test.azurewebsites.net"


def console_functions() -> list[dict[str, Any]]:
    return [t for t in http_triggers().values() if str(t["route"]).startswith("console")]


def test_every_console_route_is_anonymous_at_the_function_level() -> None:
    routes = console_functions()
    assert len(routes) >= 2
    assert {str(r["authLevel"]).lower() for r in routes} == {"anonymous"}


async def test_with_authentication_off_the_console_refuses_even_the_key_admin(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch, durable_fake: DurableFake
) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED")
    monkeypatch.setenv("CCEXPORT_FUNCTION_KEY_IS_ADMIN", "true")
    for handler, path in (
        (home.console_home, "console"),
        (statics.console_static, "console/static/console.css"),
    ):
        durable = durable_fake if handler is home.console_home else None
        answer = await call(handler, "GET", path, headers=ADMIN, durable=durable)
        assert answer.status_code == 403
        page = answer.get_body().decode()
        assert "App Service authentication" in page
        assert answer.headers["X-Frame-Options"] == "DENY"


async def test_behind_authentication_nobody_signed_in_is_asked_to_sign_in(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    for headers in ({}, principal(["admin"], tenant="another-tenant")):
        answer = await call(
            home.console_home, "GET", "console", headers=headers, durable=durable_fake
        )
        assert answer.status_code == 401
        page = answer.get_body().decode()
        assert "/.auth/login/aad?post_login_redirect_uri=/api/console/" in page
        assert "Traceback" not in page


async def test_a_signed_in_caller_gets_the_page_with_strict_headers_and_a_form_token(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    answer = await call(
        home.console_home, "GET", "console", headers=principal(["marketing"]), durable=durable_fake
    )
    assert answer.status_code == 200
    assert answer.mimetype == "text/html"
    for name, value in safety.PAGE_HEADERS.items():
        assert answer.headers[name] == value
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{safety.FORM_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert f"Path={console_path().rstrip('/')}" in cookie
    assert "Secure" in cookie  # the request came over https


def test_only_the_consoles_own_files_are_served() -> None:
    assert static_file("console.css") is not None
    parent = "." + "./pages.py"  # a name that climbs out of static/ (spelled so on purpose)
    for name in (parent, "pages.py", "console.css.bak", "templates/base.html", ""):
        assert static_file(name) is None, name


def test_a_form_from_the_consoles_page_passes_and_every_forgery_is_refused() -> None:
    token = safety.new_form_token()
    cookie = {"Cookie": f"{safety.FORM_COOKIE}={token}"}
    safety.check_form(token, {**cookie, "Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}, ORIGIN)
    safety.check_form(token, cookie, ORIGIN)  # an older browser that says neither
    forged = [
        (token, {**cookie, "Origin": "https://evil.example"}),
        (token, {**cookie, "Sec-Fetch-Site": "cross-site"}),
        (token, {**cookie, "Sec-Fetch-Site": "same-site"}),
        ("another-token", cookie),
        (None, cookie),
        (token, {}),
        ("", {"Cookie": f"{safety.FORM_COOKIE}="}),
    ]
    for form_token, headers in forged:
        with pytest.raises(safety.ForgedForm):
            safety.check_form(form_token, headers, ORIGIN)


def test_behind_the_front_end_a_form_of_the_consoles_own_https_page_passes() -> None:
    """The worker may get the request as plain HTTP while the browser used HTTPS (the
    front end says so in X-Forwarded-Proto): the console's own form must pass, and a
    form from elsewhere must not."""
    from functions.http_api.routes import public_origin as _own_origin  # noqa: PLC0415

    req = http_request(
        "POST", "console/connections/new",
        headers={"x-forwarded-proto": "https", "x-forwarded-host": "ccexport.example.net"},
    )  # fmt: skip
    plain = req.__class__(
        "POST", "http://ccexport.example.net/api/console/connections/new",
        headers={"x-forwarded-proto": "https"}, body=b"",
    )  # fmt: skip
    assert _own_origin(req) == "https://ccexport.example.net"
    assert _own_origin(plain) == "https://ccexport.example.net"
    token = safety.new_form_token()
    cookie = {"Cookie": f"{safety.FORM_COOKIE}={token}"}
    safety.check_form(
        token, {**cookie, "Origin": "https://ccexport.example.net"}, _own_origin(plain)
    )
    with pytest.raises(safety.ForgedForm):
        safety.check_form(token, {**cookie, "Origin": "https://evil.example"}, _own_origin(plain))


def test_a_form_of_too_many_fields_is_a_clear_refusal() -> None:
    from shared.console.forms import MAX_FIELDS, Form  # noqa: PLC0415
    from shared.errors import InputError  # noqa: PLC0415

    with pytest.raises(InputError, match=f"more than {MAX_FIELDS} fields"):
        Form.parse(b"&".join(b"a=1" for _ in range(MAX_FIELDS + 1)))
