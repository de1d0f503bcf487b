"""Who is calling (functions/principal.py), pinned claim by claim: a role read from the
wrong claim, a header read leniently, a tenant not checked or an admin check loosened is
a caller doing what they may not. The headers are built here the way App Service's Easy
Auth writes them; the app settings (SignIn) by their names, as a deployment writes them."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from functions.principal import (
    PRINCIPAL_HEADER,
    PRINCIPAL_ID_HEADER,
    Caller,
    Forbidden,
    SignIn,
    Unauthenticated,
    caller_of,
    signed_in_caller,
)
from shared.exports.catalog import Connection

MS_ROLE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
MS_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
MS_TENANT = "http://schemas.microsoft.com/identity/claims/tenantid"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OF_TENANT = {"typ": "tid", "val": TENANT}


def encoded(doc: Any, *, urlsafe: bool = False, padded: bool = True) -> str:
    raw = orjson.dumps(doc)
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if padded else text.rstrip("=")


def principal(*claims: tuple[str, str], role_typ: str | None = None) -> dict[str, Any]:
    """A principal of TENANT with these claims besides."""
    listed = [OF_TENANT, *({"typ": t, "val": v} for t, v in claims)]
    doc: dict[str, Any] = {"auth_typ": "aad", "claims": listed}
    if role_typ is not None:
        doc["role_typ"] = role_typ
    return doc


def test_no_header_or_an_empty_one_is_nobody_signed_in() -> None:
    for headers in ({}, {PRINCIPAL_HEADER: ""}, {PRINCIPAL_ID_HEADER: "someone"}):
        with pytest.raises(Unauthenticated) as caught:
            caller_of(headers, TENANT)
        assert str(caught.value) == "sign in first: this request carries no signed-in caller"


def test_a_principal_is_read_only_for_the_tenant_it_names() -> None:
    for claim in ("tid", MS_TENANT):
        for named in (TENANT, TENANT.upper(), f" {TENANT} "):
            doc = {"claims": [{"typ": claim, "val": named}, {"typ": "roles", "val": "admin"}]}
            assert caller_of({PRINCIPAL_HEADER: encoded(doc)}, TENANT).is_admin, (claim, named)
    other = "00000000-0000-0000-0000-000000000000"
    for claims in (
        [{"typ": "tid", "val": other}],
        [{"typ": MS_TENANT, "val": other}],
        [OF_TENANT, {"typ": MS_TENANT, "val": other}],  # two tenants: not one of them
        [{"typ": "tid", "val": TENANT[:-1]}],
    ):
        doc = {"claims": [*claims, {"typ": "roles", "val": "admin"}]}
        with pytest.raises(Unauthenticated) as caught:
            caller_of({PRINCIPAL_HEADER: encoded(doc)}, TENANT)
        assert str(caught.value) == "the signed-in caller is not of this app's tenant", claims
    nameless: list[dict[str, Any]] = [
        {"claims": [{"typ": "roles", "val": "admin"}, {"typ": "tenant", "val": TENANT}]},
        {"claims": None},
        {},
    ]
    for unnamed in nameless:
        with pytest.raises(Unauthenticated) as caught:
            caller_of({PRINCIPAL_HEADER: encoded(unnamed)}, TENANT)
        assert str(caught.value) == "the signed-in caller's principal names no tenant", unnamed
    empty = {"claims": [{"typ": "tid", "val": ""}, {"typ": "roles", "val": "admin"}]}
    with pytest.raises(Unauthenticated, match="not of this app's tenant"):
        caller_of({PRINCIPAL_HEADER: encoded(empty)}, TENANT)
    with pytest.raises(Unauthenticated) as caught:
        caller_of({PRINCIPAL_HEADER: encoded(empty)}, "")  # no tenant trusted: not even ""
    assert str(caught.value) == (
        "nobody can be signed in: App Service authentication is on and CCEXPORT_TENANT_ID "
        "is not set"
    )


def test_roles_come_from_every_role_claim_case_folded_and_nothing_else() -> None:
    doc = principal(
        ("roles", "Marketing"),
        ("role", "SALES"),
        (MS_ROLE, "Support"),
        ("groups", "admin"),  # not a role claim: never a role, least of all admin
        ("name", "admin"),
        ("roles", ""),  # an empty role is no role
        ("oid", "00000000-0000-0000-0000-000000000001"),
    )
    caller = caller_of({PRINCIPAL_HEADER: encoded(doc)}, TENANT)
    assert caller.roles == frozenset({"marketing", "sales", "support"})
    assert not caller.key_only
    assert not caller.is_admin
    with pytest.raises(Forbidden, match="only an admin may manage connections"):
        caller.require_admin("manage connections")


def test_the_role_type_the_token_names_is_read_too() -> None:
    doc = principal(("app_role", "Editors"), ("other", "x"), role_typ="app_role")
    assert caller_of({PRINCIPAL_HEADER: encoded(doc)}, TENANT).roles == frozenset({"editors"})
    # without role_typ the default is "roles" (a claim typed "app_role" is then no role)
    plain = principal(("app_role", "Editors"), ("roles", "Viewers"))
    assert caller_of({PRINCIPAL_HEADER: encoded(plain)}, TENANT).roles == frozenset({"viewers"})
    empty_typ = {**principal(("roles", "Viewers")), "role_typ": ""}
    assert caller_of({PRINCIPAL_HEADER: encoded(empty_typ)}, TENANT).roles == frozenset({"viewers"})


def test_a_role_claim_without_a_value_adds_nothing() -> None:
    doc = {"claims": [OF_TENANT, {"typ": "roles"}, {"typ": "roles", "val": "Admin"}]}
    assert caller_of({PRINCIPAL_HEADER: encoded(doc)}, TENANT).roles == frozenset({"admin"})


def test_the_admin_role_is_admin_in_any_case() -> None:
    caller = caller_of({PRINCIPAL_HEADER: encoded(principal(("roles", "ADMIN")))}, TENANT)
    assert caller.is_admin
    caller.require_admin("manage connections")  # no error
    assert caller.may_use(None)


def test_the_header_may_be_urlsafe_unpadded_or_padded_with_spaces() -> None:
    # "?>" encodes to "Pz4" in base64: "/" and "+" in the standard alphabet appear for
    # some values; these roles are chosen so that both alphabets differ.
    doc = principal(("roles", "a?>~"), ("roles", "b>>>?"))
    expected = frozenset({"a?>~", "b>>>?"})
    standard = encoded(doc)
    assert "+" in standard or "/" in standard  # the case the replacement is for
    for header in (
        standard,
        encoded(doc, urlsafe=True),
        encoded(doc, urlsafe=True, padded=False),
        encoded(doc, padded=False),
        f"  {standard}\n",
    ):
        assert caller_of({PRINCIPAL_HEADER: header}, TENANT).roles == expected, header


@pytest.mark.parametrize(
    "header",
    [
        "%%%",  # not base64
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_header_that_is_not_base64_json_is_refused(header: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        caller_of({PRINCIPAL_HEADER: header}, TENANT)
    assert str(caught.value) == "the x-ms-client-principal header is not base64 JSON"
    only_tenant = encoded({"claims": [OF_TENANT]})
    assert caller_of({PRINCIPAL_HEADER: only_tenant}, TENANT).roles == frozenset()  # no roles: fine


@pytest.mark.parametrize("doc", [[], "admin", 3, None])
def test_a_header_that_is_not_a_json_object_is_refused(doc: Any) -> None:
    with pytest.raises(Unauthenticated) as caught:
        caller_of({PRINCIPAL_HEADER: encoded(doc)}, TENANT)
    assert str(caught.value) == "the x-ms-client-principal header is not a JSON object"


def test_unpadded_headers_of_every_length_are_read() -> None:
    """Easy Auth may drop the padding: whatever the length, the header is read."""
    lengths = set()
    for size in range(24):
        role = "r" * size
        header = encoded(principal(("roles", role)), urlsafe=True, padded=False)
        lengths.add(len(header) % 20)
        assert caller_of({PRINCIPAL_HEADER: header}, TENANT).roles == ({role} if role else set())
    assert len(lengths) >= 12  # lengths of every remainder were tried


def test_claims_that_are_not_objects_are_passed_over() -> None:
    # (no claims at all names no tenant: test_a_principal_is_read_only_for_the_tenant_it_names)
    doc = {"claims": ["roles", 3, None, OF_TENANT, "tid", {"typ": "roles", "val": "A"}]}
    caller = caller_of({PRINCIPAL_HEADER: encoded(doc)}, TENANT)
    assert not caller.key_only
    assert caller.roles == frozenset({"a"})
    assert caller.id == "unknown"


def test_the_id_is_the_id_header_then_the_object_id_claims_in_order() -> None:
    claims = (("sub", "the-sub"), ("oid", "the-oid"), (MS_OID, "the-ms-oid"), ("roles", "x"))
    header = encoded(principal(*claims))
    assert caller_of({PRINCIPAL_HEADER: header, PRINCIPAL_ID_HEADER: "from-header"}, TENANT).id == (
        "from-header"
    )
    assert caller_of({PRINCIPAL_HEADER: header}, TENANT).id == "the-ms-oid"
    assert caller_of({PRINCIPAL_HEADER: encoded(principal(*claims[:2]))}, TENANT).id == "the-oid"
    assert caller_of({PRINCIPAL_HEADER: encoded(principal(claims[0]))}, TENANT).id == "the-sub"
    # an empty claim is skipped for the next one, and an empty header for the claims
    skipped = principal((MS_OID, ""), ("oid", "second"))
    assert (
        caller_of({PRINCIPAL_HEADER: encoded(skipped), PRINCIPAL_ID_HEADER: ""}, TENANT).id
        == "second"
    )
    assert (
        caller_of({PRINCIPAL_HEADER: encoded(principal(("name", "Ana")))}, TENANT).id == "unknown"
    )
    # an object id claim without a value is no id (never the text "None")
    no_value = {"claims": [OF_TENANT, {"typ": MS_OID}, {"typ": "oid"}, {"typ": "sub"}]}
    assert caller_of({PRINCIPAL_HEADER: encoded(no_value)}, TENANT).id == "unknown"
    then_sub = {"claims": [OF_TENANT, {"typ": "oid"}, {"typ": "sub", "val": "s-1"}]}
    assert caller_of({PRINCIPAL_HEADER: encoded(then_sub)}, TENANT).id == "s-1"
    long_id = "x" * 300
    assert (
        caller_of({PRINCIPAL_HEADER: header, PRINCIPAL_ID_HEADER: long_id}, TENANT).id == "x" * 128
    )


def test_a_contributor_uses_only_connections_that_share_a_role() -> None:
    caller = caller_of({PRINCIPAL_HEADER: encoded(principal(("roles", "Marketing")))}, TENANT)
    assert caller.may_use(Connection("mkt", "Marketing", roles=("marketing", "other")))
    assert caller.may_use(Connection("mkt2", "Marketing", roles=("MARKETING",)))
    assert not caller.may_use(Connection("sales", "Sales", roles=("sales",)))
    assert not caller.may_use(Connection("open", "No roles"))
    assert not caller.may_use(None)  # no connection named: nothing a contributor may use
    nobody = caller_of({PRINCIPAL_HEADER: encoded(principal())}, TENANT)
    assert nobody.roles == frozenset()
    assert not nobody.may_use(Connection("mkt", "Marketing", roles=("marketing",)))
    with pytest.raises(Forbidden):
        nobody.require_admin("do this")


def test_a_claim_whose_value_is_null_is_read_as_empty() -> None:
    doc = {
        "claims": [
            OF_TENANT,
            {"typ": "roles", "val": None},
            {"typ": "oid", "val": None},
            {"typ": "sub", "val": "the-subject"},
        ]
    }
    header = base64.b64encode(orjson.dumps(doc)).decode()
    caller = caller_of({"x-ms-client-principal": header}, TENANT)
    assert caller.roles == frozenset()  # not the role "none"
    assert caller.id == "the-subject"  # not "None", shared by every such caller


# --- SignIn: the deployment's three settings ----------------------------------------------------

AUTH_ON = "WEBSITE_AUTH_ENABLED"
KEY_IS_ADMIN = "CCEXPORT_FUNCTION_KEY_IS_ADMIN"
TENANT_ID = "CCEXPORT_TENANT_ID"
OPERATOR = Caller("function-key", frozenset(), key_only=True)
AUTH_OFF_MESSAGE = (
    "nobody can be signed in: App Service authentication is off and "
    "CCEXPORT_FUNCTION_KEY_IS_ADMIN is not true"
)


def test_the_settings_are_read_by_name_trimmed_and_case_folded() -> None:
    assert SignIn.from_mapping({}) == SignIn(auth_enabled=False, key_is_admin=False, tenant_id="")
    written = {AUTH_ON: " True", KEY_IS_ADMIN: "TRUE ", TENANT_ID: f" {TENANT.upper()}\n"}
    assert SignIn.from_mapping(written) == SignIn(True, True, TENANT)
    # each setting counts for itself alone
    assert SignIn.from_mapping({KEY_IS_ADMIN: "true"}) == SignIn(False, True, "")
    assert SignIn.from_mapping({AUTH_ON: "true"}) == SignIn(True, False, "")
    for no in ("", "false", "1", "yes", "on", "truee"):
        assert SignIn.from_mapping({AUTH_ON: no, KEY_IS_ADMIN: no}) == SignIn(False, False, "")


def test_with_authentication_off_the_function_key_is_the_operator_only_when_told() -> None:
    forged = {PRINCIPAL_HEADER: encoded(principal(("roles", "Admin"), ("oid", "someone")))}
    for headers in ({}, forged):  # the principal headers are never read here
        operator = signed_in_caller(headers, {KEY_IS_ADMIN: "true", TENANT_ID: TENANT})
        assert operator == OPERATOR
        assert operator.is_admin
        for settings in ({}, {AUTH_ON: "false", TENANT_ID: TENANT}, {KEY_IS_ADMIN: "no"}):
            with pytest.raises(Unauthenticated) as caught:
                signed_in_caller(headers, settings)
            assert str(caught.value) == AUTH_OFF_MESSAGE


def test_with_authentication_on_the_principal_decides_and_the_key_is_nobody() -> None:
    on = {AUTH_ON: "true", TENANT_ID: TENANT, KEY_IS_ADMIN: "true"}
    header = {PRINCIPAL_HEADER: encoded(principal(("roles", "Sales"), ("oid", "ana")))}
    assert signed_in_caller(header, on) == Caller("ana", frozenset({"sales"}))
    with pytest.raises(Unauthenticated) as caught:
        signed_in_caller({}, on)
    assert str(caught.value) == "sign in first: this request carries no signed-in caller"
    # the tenant setting left out (or blank): nobody, whatever the request carries
    for settings in ({AUTH_ON: "true"}, {AUTH_ON: "true", TENANT_ID: "  "}):
        for headers in (header, {}):
            with pytest.raises(Unauthenticated) as caught:
                signed_in_caller(headers, settings)
            assert str(caught.value) == (
                "nobody can be signed in: App Service authentication is on and "
                "CCEXPORT_TENANT_ID is not set"
            )
