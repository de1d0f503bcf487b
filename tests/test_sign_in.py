"""Sign-in fails closed: the app trusts a principal only behind the platform's
authentication and only of the deployment's own tenant, and the function key alone is
an admin only where the deployment says.
"""

from __future__ import annotations

import pytest

from functions import http_api
from functions.principal import (
    AUTH_ENABLED_SETTING,
    KEY_IS_ADMIN_SETTING,
    KEY_ONLY,
    TENANT_SETTING,
    SignIn,
    Unauthenticated,
    signed_in_caller,
)
from tests.support.function_harness import TENANT, AppEnv, principal, response_json
from tests.support.http_calls import call

FORGED_ADMIN = principal(["admin"], object_id="someone")
OTHER_TENANT = "0c1d2e3f-4a5b-4c6d-8e7f-901234567890"
SIGNED_IN = {AUTH_ENABLED_SETTING: "True", TENANT_SETTING: TENANT}


def test_the_three_settings_are_read_in_one_place() -> None:
    assert SignIn.from_mapping({}) == SignIn(auth_enabled=False, key_is_admin=False, tenant_id="")
    settings = {
        AUTH_ENABLED_SETTING: " true ",
        KEY_IS_ADMIN_SETTING: "TRUE",
        TENANT_SETTING: f" {TENANT.upper()} ",
    }
    assert SignIn.from_mapping(settings) == SignIn(True, True, TENANT)
    for no in ("", "1", "yes", "False"):
        off = SignIn.from_mapping({AUTH_ENABLED_SETTING: no, KEY_IS_ADMIN_SETTING: no})
        assert not off.auth_enabled
        assert not off.key_is_admin


def test_behind_authentication_the_principal_is_the_caller() -> None:
    caller = signed_in_caller(principal(["marketing"], "ana"), SIGNED_IN)
    assert caller.id == "ana"
    assert caller.roles == frozenset({"marketing"})
    assert not caller.key_only


def test_behind_authentication_a_request_without_a_principal_is_refused() -> None:
    with pytest.raises(Unauthenticated, match="sign in first"):
        signed_in_caller({}, {**SIGNED_IN, KEY_IS_ADMIN_SETTING: "true"})


def test_only_a_principal_of_the_deployments_tenant_is_signed_in() -> None:
    with pytest.raises(Unauthenticated) as caught:
        signed_in_caller(principal(["admin"], tenant=OTHER_TENANT), SIGNED_IN)
    assert str(caught.value) == "the signed-in caller is not of this app's tenant"
    with pytest.raises(Unauthenticated) as caught:
        signed_in_caller(principal(["admin"], tenant=None), SIGNED_IN)
    assert str(caught.value) == "the signed-in caller's principal names no tenant"
    # the function key does not stand in for a principal refused
    with pytest.raises(Unauthenticated, match="not of this app's tenant"):
        signed_in_caller(
            principal(["admin"], tenant=OTHER_TENANT), {**SIGNED_IN, KEY_IS_ADMIN_SETTING: "true"}
        )
    assert signed_in_caller(principal(["admin"], tenant=TENANT.upper()), SIGNED_IN).is_admin


def test_behind_authentication_without_the_tenant_setting_nobody_is_signed_in() -> None:
    for settings in (
        {AUTH_ENABLED_SETTING: "True"},
        {AUTH_ENABLED_SETTING: "True", TENANT_SETTING: "  "},
        {AUTH_ENABLED_SETTING: "True", TENANT_SETTING: "", KEY_IS_ADMIN_SETTING: "true"},
    ):
        for headers in (principal(["admin"]), principal(["admin"], tenant=""), {}):
            with pytest.raises(Unauthenticated) as caught:
                signed_in_caller(headers, settings)
            assert str(caught.value) == (
                "nobody can be signed in: App Service authentication is on and "
                f"{TENANT_SETTING} is not set"
            )


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


async def test_the_api_answers_401_to_another_tenant_and_to_no_tenant(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = principal(["admin"], tenant=OTHER_TENANT)
    refused = await call(http_api.connections_list, "GET", "connections", headers=other)
    assert response_json(refused) == {"error": "the signed-in caller is not of this app's tenant"}
    assert refused.status_code == 401
    nameless = principal(["admin"], tenant=None)
    refused = await call(http_api.connections_list, "GET", "connections", headers=nameless)
    assert refused.status_code == 401
    assert response_json(refused) == {"error": "the signed-in caller's principal names no tenant"}
    allowed = await call(
        http_api.connections_list, "GET", "connections", headers=principal(["admin"])
    )
    assert allowed.status_code == 200
    monkeypatch.delenv(TENANT_SETTING)
    unset = await call(
        http_api.connections_list, "GET", "connections", headers=principal(["admin"])
    )
    assert unset.status_code == 401
    assert TENANT_SETTING in response_json(unset)["error"]


async def test_with_authentication_off_a_forged_admin_gets_nothing(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(AUTH_ENABLED_SETTING)
    refused = await call(http_api.connections_list, "GET", "connections", headers=FORGED_ADMIN)
    assert refused.status_code == 401
    monkeypatch.setenv(KEY_IS_ADMIN_SETTING, "true")
    allowed = await call(http_api.connections_list, "GET", "connections", headers=FORGED_ADMIN)
    assert allowed.status_code == 200
