"""Names every store accepts: Key Vault secret names, lock blobs, local file names.

Key Vault allows the fewest characters, so its alphabet is the common one; a lock and
the secret it guards can then share a name.
"""

from __future__ import annotations

import hashlib
import re

from shared.errors import CcexportError

_MAX_NAME = 256
_VAULT_NAME = re.compile(r"^[0-9a-z-]{1,127}$")
_DIGEST_CHARS = 16


class InvalidName(CcexportError):
    """A name no store can hold faithfully."""


def storage_name(name: str) -> str:
    """A deterministic name that Key Vault and every file system accept.

    Key Vault allows letters, digits and dashes, up to 127 characters, and ignores
    case. A name already in that form (lower case) is kept so operators recognise it;
    any other name is folded to that alphabet and suffixed with a digest of the
    original, so names that fold alike (`Acme`, `acme`, `a_b`, `a.b`) stay apart.
    """
    check_name(name)
    if _VAULT_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST_CHARS]
    folded = re.sub(r"[^0-9a-z]+", "-", name.lower()).strip("-")
    folded = folded[: 127 - _DIGEST_CHARS - 1].rstrip("-")
    return f"{folded}-{digest}" if folded else digest


def check_name(name: str) -> None:
    """Reject names no store can hold faithfully (empty, huge, control characters)."""
    if not name or len(name) > _MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName(
            f"invalid secret name (1–{_MAX_NAME} printable characters): {name[:40]!r}"
        )
