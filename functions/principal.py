"""Who is calling the HTTP API, and what they may do.

Every endpoint but the OAuth callback needs the function key. Behind App Service
authentication (Easy Auth) the platform also adds ``x-ms-client-principal``: base64
JSON with the signed-in user's claims, among them their app roles. Easy Auth strips
that header from incoming requests, so when present it was set by the platform.

- No principal header: a caller with only the function key, i.e. an operator; they
  may do everything (the key is the app's admin secret, whoever holds it could also
  forge the header).
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

import orjson

from shared.errors import CcexportError
from shared.exports.access import ADMIN_ROLE, Caller, Forbidden

__all__ = [
    "ADMIN_ROLE",
    "KEY_ONLY",
    "PRINCIPAL_HEADER",
    "PRINCIPAL_ID_HEADER",
    "Caller",
    "Forbidden",
    "Unauthenticated",
    "caller_of",
]

PRINCIPAL_HEADER = "x-ms-client-principal"
PRINCIPAL_ID_HEADER = "x-ms-client-principal-id"
KEY_ONLY = "function-key"
_ROLE_CLAIMS = {"roles", "role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid", "sub")


class Unauthenticated(CcexportError):
    """The caller's principal header cannot be read."""


def caller_of(headers: Mapping[str, str]) -> Caller:
    """The caller, from the Easy Auth headers (or the function key alone)."""
    raw = headers.get(PRINCIPAL_HEADER)
    if not raw:
        return Caller(KEY_ONLY, frozenset(), key_only=True)
    try:
        padded = raw.strip() + "=" * (-len(raw.strip()) % 4)
        doc = orjson.loads(base64.b64decode(padded.replace("-", "+").replace("_", "/")))
    except (binascii.Error, ValueError):
        raise Unauthenticated("the x-ms-client-principal header is not base64 JSON") from None
    if not isinstance(doc, dict):
        raise Unauthenticated("the x-ms-client-principal header is not a JSON object")
    claims = [c for c in doc.get("claims") or [] if isinstance(c, dict)]
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
