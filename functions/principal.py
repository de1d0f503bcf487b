"""Who is calling the HTTP API, and what they may do.

Every endpoint but the OAuth callback needs the function key. Behind App Service
authentication (Easy Auth) the platform also adds ``x-ms-client-principal``: base64
JSON with the signed-in user's claims, among them their app roles. Easy Auth strips
that header from incoming requests, so when present it was set by the platform.

- Who is trusted is :class:`SignIn`'s rule: the principal only where the platform's
  authentication is on, and only one of the app's own Entra tenant (a request without
  one, or from another tenant, is then 401); the function key alone is an operator
  (an admin) only where the deployment says so explicitly.
- ``admin`` role: everything, including managing connections.
- Any other roles: contributors. They may see and run exports, and edit definitions,
  only over connections whose ``roles`` include one of theirs.

What each kind of caller may do is decided in shared.exports.access; this module
only reads who is calling.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from shared.errors import CcexportError
from shared.exports.access import ADMIN_ROLE, Caller, Forbidden

__all__ = [
    "ADMIN_ROLE",
    "AUTH_ENABLED_SETTING",
    "KEY_IS_ADMIN_SETTING",
    "KEY_ONLY",
    "PRINCIPAL_HEADER",
    "PRINCIPAL_ID_HEADER",
    "TENANT_SETTING",
    "Caller",
    "Forbidden",
    "SignIn",
    "Unauthenticated",
    "caller_of",
    "signed_in_caller",
]

PRINCIPAL_HEADER = "x-ms-client-principal"
PRINCIPAL_ID_HEADER = "x-ms-client-principal-id"
KEY_ONLY = "function-key"
_ROLE_CLAIMS = {"roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid", "sub")
_TENANT_CLAIMS = {"http://schemas.microsoft.com/identity/claims/tenantid", "tid"}


class Unauthenticated(CcexportError):
    """Nobody is signed in: no principal, one that cannot be read, or one the app does
    not trust (another tenant's, or any where the deployment trusts none)."""


AUTH_ENABLED_SETTING = "WEBSITE_AUTH_ENABLED"
"""Set to ``True`` by App Service when its authentication is on for the app (and by
``ccexport serve``, which plays that part on this machine)."""
KEY_IS_ADMIN_SETTING = "CCEXPORT_FUNCTION_KEY_IS_ADMIN"
"""``true`` makes a caller with the function key alone an admin, where App Service
authentication is off. Off unless a deployment says so: without the platform's
sign-in, nobody else can be told apart."""
TENANT_SETTING = "CCEXPORT_TENANT_ID"
"""The Microsoft Entra tenant whose users may sign in (the deployment sets it to the
tenant its sign-in trusts). With authentication on and this unset, nobody is signed in."""


@dataclass(frozen=True)
class SignIn:
    """How the deployment lets the app know its callers: its three settings, read here
    and nowhere else. Read from the app settings on each request, before any service
    opens, so that no fault of storage or Key Vault can turn a 401 into a 500."""

    auth_enabled: bool
    key_is_admin: bool
    tenant_id: str  # case-folded; "" when not set

    @classmethod
    def from_mapping(cls, settings: Mapping[str, str]) -> SignIn:
        return cls(
            auth_enabled=_true(settings, AUTH_ENABLED_SETTING),
            key_is_admin=_true(settings, KEY_IS_ADMIN_SETTING),
            tenant_id=settings.get(TENANT_SETTING, "").strip().casefold(),
        )

    def caller(self, headers: Mapping[str, str]) -> Caller:
        """The caller as the deployment lets the app know them; fails closed.

        With App Service authentication on, the principal headers are the platform's
        (it drops any a client sends): a request without one, or whose principal is not
        of ``CCEXPORT_TENANT_ID``'s tenant, is not signed in (401), and without that
        setting nobody is. With it off, those headers could be anyone's and are never
        read: the function key alone is the operator (an admin) only where
        ``CCEXPORT_FUNCTION_KEY_IS_ADMIN`` says so, else nobody is signed in.
        """
        if self.auth_enabled:
            return caller_of(headers, self.tenant_id)
        if self.key_is_admin:
            return Caller(KEY_ONLY, frozenset(), key_only=True)
        raise Unauthenticated(
            "nobody can be signed in: App Service authentication is off and "
            f"{KEY_IS_ADMIN_SETTING} is not true"
        )


def _true(settings: Mapping[str, str], name: str) -> bool:
    return settings.get(name, "").strip().casefold() == "true"


def signed_in_caller(headers: Mapping[str, str], settings: Mapping[str, str]) -> Caller:
    """The caller of a request, by the sign-in these app settings describe (:class:`SignIn`)."""
    return SignIn.from_mapping(settings).caller(headers)


def caller_of(headers: Mapping[str, str], tenant_id: str) -> Caller:
    """The signed-in caller, from the Easy Auth headers, if their principal is of this
    tenant (a case-folded tenant id); anything less is :class:`Unauthenticated`."""
    if not tenant_id:
        raise Unauthenticated(
            f"nobody can be signed in: App Service authentication is on and {TENANT_SETTING} "
            "is not set"
        )
    raw = headers.get(PRINCIPAL_HEADER)
    if not raw:
        raise Unauthenticated("sign in first: this request carries no signed-in caller")
    try:
        padded = raw.strip() + "=" * (-len(raw.strip()) % 4)
        doc = orjson.loads(base64.b64decode(padded.replace("-", "+").replace("_", "/")))
    except (binascii.Error, ValueError):
        raise Unauthenticated("the x-ms-client-principal header is not base64 JSON") from None
    if not isinstance(doc, dict):
        raise Unauthenticated("the x-ms-client-principal header is not a JSON object")
    claims = [c for c in doc.get("claims") or [] if isinstance(c, dict)]
    tenants = {
        str(c.get("val") or "").strip().casefold() for c in claims if c.get("typ") in _TENANT_CLAIMS
    }
    if not tenants:
        raise Unauthenticated("the signed-in caller's principal names no tenant")
    if tenants != {tenant_id}:
        raise Unauthenticated("the signed-in caller is not of this app's tenant")
    role_type = str(doc.get("role_typ") or "roles")
    roles = frozenset(
        str(c.get("val") or "").casefold()
        for c in claims
        if c.get("typ") == role_type or c.get("typ") in _ROLE_CLAIMS
    ) - {""}
    principal_id = headers.get(PRINCIPAL_ID_HEADER, "")
    if not principal_id:
        by_type = {str(c.get("typ")): str(c.get("val") or "") for c in claims}
        principal_id = next((by_type[t] for t in _ID_CLAIMS if by_type.get(t)), "unknown")
    return Caller(principal_id[:128], roles)
