"""Sign-in fails closed: the app trusts a principal only behind the platform's
authentication, and the function key alone is an admin only where the deployment says.
"""

from __future__ import annotations

import pytest

from functions import http_api
from functions.principal import (
    AUTH_ENABLED_SETTING,
    KEY_IS_ADMIN_SETTING,
    KEY_ONLY,
    Unauthenticated,
    signed_in_caller,
)
from tests.support.function_harness import AppEnv, principal, response_json
from tests.support.http_calls import call

FORGED_ADMIN = principal(["admin"], object_id="someone")


def test_behind_authentication_the_principal_is_the_caller() -> None:
    caller = signed_in_caller(principal(["marketing"], "ana"), {AUTH_ENABLED_SETTING: "True"})
    assert caller.id == "ana"
    assert caller.roles == frozenset({"marketing"})
    assert not caller.key_only


def test_behind_authentication_a_request_without_a_principal_is_refused() -> None:
    with pytest.raises(Unauthenticated, match="sign in first"):
        signed_in_caller({}, {AUTH_ENABLED_SETTING: "True", KEY_IS_ADMIN_SETTING: "true"})


def test_without_authentication_principal_headers_are_never_read() -> None:
    for settings in ({}, {AUTH_ENABLED_SETTING: "False"}):
        with pytest.raises(Unauthenticated, match="authentication is off"):
            signed_in_caller(FORGED_ADMIN, settings)
    operator = signed_in_caller(FORGED_ADMIN, {KEY_IS_ADMIN_SETTING: "true"})
    assert operator.id == KEY_ONLY  # the forged principal's id and roles play no part
    assert operator.key_only
    assert operator.is_admin


async def test_the_api_answers_401_to_a_request_without_a_principal(app_env: AppEnv) -> None:
    refused = await call(http_api.exports_list, "GET", "exports", headers={})
    assert refused.status_code == 401
    assert "sign in" in response_json(refused)["error"]


async def test_with_authentication_off_a_forged_admin_gets_nothing(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(AUTH_ENABLED_SETTING)
    refused = await call(http_api.connections_list, "GET", "connections", headers=FORGED_ADMIN)
    assert refused.status_code == 401
    monkeypatch.setenv(KEY_IS_ADMIN_SETTING, "true")
    allowed = await call(http_api.connections_list, "GET", "connections", headers=FORGED_ADMIN)
    assert allowed.status_code == 200
