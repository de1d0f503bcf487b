"""The catalog: export definitions and connections, kept as JSON documents.

Layout (the ``exports`` container in Azure, ``CCEXPORT_HOME/catalog`` locally)::

    definitions/<export>.json     an ExportDefinition (shared.exports.definitions)
    connections/<connection>.json who may use a Constant Contact account, and the
                                  data-privacy consent that must be accepted first
    oauth-states/<digest>.json    which connection a started authorization belongs to

A connection record never holds a token: tokens live in the secret store under the
names shared.constant_contact.tokens gives them, and deleting a connection deletes them there too.
Writes are optimistic: an update names the ETag it read, a create fails if the
document exists (shared.storage.documents).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from shared.constant_contact.connections import check_connection
from shared.constant_contact.tokens import (
    pending_secret,
    read_status,
    status_secret,
    tokens_secret,
)
from shared.errors import CcexportError, ConfigError
from shared.exports import definitions as exports
from shared.exports.definitions import ExportDefinition
from shared.secrets.store import SecretStore
from shared.storage.documents import Document, DocumentChanged, DocumentError, Documents

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFINITIONS = "definitions/"
CONNECTIONS = "connections/"
OAUTH_STATES = "oauth-states/"
_ROLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CONNECTION_FIELDS = {"name", "display_name", "roles", "privacy_consent"}
"""What a person may send; ``id``, ``status``, ``connected_at`` and ``account_name`` are
the server's."""
_MAX_DISPLAY_NAME = 200


class NotFound(CcexportError):
    """No export definition or connection of that name."""


class ConnectionStatus(StrEnum):
    NOT_CONNECTED = "not_connected"
    CONNECTED = "connected"
    NEEDS_REAUTHORISATION = "needs_reauthorisation"


@dataclass(frozen=True)
class Stored(Generic[T]):
    """A value as read from the catalog, with the ETag an update must name."""

    value: T
    etag: str


@dataclass(frozen=True)
class PrivacyConsent:
    """Who accepted the data-privacy terms for a connection, and when.

    ``accepted_by`` is the principal's id (an object id, or ``function-key`` for a
    caller with only the function key), never a name or email address.
    """

    accepted_by: str
    accepted_at: str

    def to_json(self) -> dict[str, Any]:
        return {"accepted": True, "accepted_by": self.accepted_by, "accepted_at": self.accepted_at}


@dataclass(frozen=True)
class Connection:
    """A Constant Contact account the app may send with, and who may use it."""

    name: str
    display_name: str
    roles: tuple[str, ...] = ()
    consent: PrivacyConsent | None = None
    status: ConnectionStatus = ConnectionStatus.NOT_CONNECTED
    connected_at: str | None = None
    id: str = ""
    """Made when the connection is created, and never again: a connection removed and
    added again under the same name is another connection, which takes over none of
    the old one's exports or runs (they carry the id they were made for). Records
    older than ids have ``""``, and so do the definitions saved for them."""
    account_name: str | None = None
    """The organization name of the Constant Contact account it reaches, read when it
    was last connected (shared.exports.authorizing), so that showing it costs no
    request; None before that, or when Constant Contact did not say."""

    def allows(self, roles: Collection[str]) -> bool:
        """Whether a caller holding ``roles`` may run exports over this connection."""
        mine = {r.casefold() for r in self.roles}
        return any(r.casefold() in mine for r in roles)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "roles": list(self.roles),
            "privacy_consent": self.consent.to_json() if self.consent else {"accepted": False},
            "status": self.status.value,
            "connected_at": self.connected_at,
            "id": self.id,
            "account_name": self.account_name,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> Connection:
        """A stored record (written by this module; read leniently but checked)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        consent_doc = data.get("privacy_consent") or {}
        consent = None
        if isinstance(consent_doc, dict) and consent_doc.get("accepted") is True:
            consent = PrivacyConsent(
                str(consent_doc.get("accepted_by", "")), str(consent_doc.get("accepted_at", ""))
            )
        try:
            status = ConnectionStatus(data.get("status", ConnectionStatus.NOT_CONNECTED))
        except ValueError:
            status = ConnectionStatus.NOT_CONNECTED
        return cls(
            name=check_connection(str(data.get("name", ""))),
            display_name=str(data.get("display_name", "")),
            roles=tuple(str(r) for r in data.get("roles") or ()),
            consent=consent,
            status=status,
            connected_at=data.get("connected_at"),
            id=str(data.get("id") or ""),
            account_name=_text_or_none(data.get("account_name")),
        )

    def sends(self, definition: ExportDefinition) -> bool:
        """Whether ``definition`` was saved for this connection, not for an earlier one
        that had its name."""
        return definition.connection == self.name and definition.connection_id == self.id


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def connection_from_request(
    name: str,
    body: Any,
    *,
    principal_id: str,
    existing: Connection | None,
    now: str | None = None,
) -> Connection:
    """Validate what a person sent to create or update a connection.

    ``privacy_consent.accepted: true`` records who accepted and when (kept from the
    first acceptance); ``false`` withdraws it. Status and connection time are the
    server's own and are kept from the stored record.
    """
    check_connection(name)
    if not isinstance(body, dict):
        raise ConfigError("connection: expected a JSON object")
    unknown = sorted(set(body) - _CONNECTION_FIELDS)
    if unknown:
        raise ConfigError(f"connection: unknown field(s) {', '.join(unknown)}")
    if body.get("name", name) != name:
        raise ConfigError(f"connection: the body names {body.get('name')!r}, the URL {name!r}")
    display = body.get("display_name", existing.display_name if existing else name)
    if not isinstance(display, str) or not display.strip() or len(display) > _MAX_DISPLAY_NAME:
        raise ConfigError(f"connection: display_name must be 1-{_MAX_DISPLAY_NAME} characters")
    roles = body.get("roles", list(existing.roles) if existing else [])
    if not isinstance(roles, list) or not all(isinstance(r, str) and _ROLE.match(r) for r in roles):
        raise ConfigError(
            "connection: roles must be a list of role names (letters, digits, '.', '_', '-')"
        )
    consent = existing.consent if existing else None
    if "privacy_consent" in body:
        doc = body["privacy_consent"]
        if not isinstance(doc, dict) or not isinstance(doc.get("accepted"), bool):
            raise ConfigError('connection: privacy_consent must be {"accepted": true|false}')
        if not doc["accepted"]:
            consent = None
        elif consent is None:
            consent = PrivacyConsent(principal_id, now or _now_iso())
    return Connection(
        name=name,
        display_name=display.strip(),
        roles=tuple(dict.fromkeys(roles)),
        consent=consent,
        status=existing.status if existing else ConnectionStatus.NOT_CONNECTED,
        connected_at=existing.connected_at if existing else None,
        id=existing.id if existing else new_connection_id(),
        account_name=existing.account_name if existing else None,
    )


def new_connection_id() -> str:
    """A new connection's id: random, so no later connection of the same name has it."""
    return secrets.token_hex(8)


def definition_name(name: str) -> str:
    return f"{DEFINITIONS}{name}.json"


def connection_name(name: str) -> str:
    return f"{CONNECTIONS}{name}.json"


def state_name(state: str) -> str:
    """Where a started authorization is found from its state; the state itself is not
    stored here (only the secret store keeps it, for the constant-time check)."""
    return f"{OAUTH_STATES}{hashlib.sha256(state.encode()).hexdigest()[:40]}.json"


class Catalog:
    """Export definitions and connections over one document store and the secret store."""

    def __init__(self, documents: Documents, secrets: SecretStore | None = None) -> None:
        self.documents = documents
        self._secrets = secrets

    # -- export definitions ------------------------------------------------------------

    async def export(self, name: str) -> Stored[ExportDefinition] | None:
        doc = await self.documents.get(definition_name(_export_key(name)))
        return None if doc is None else Stored(self._definition(doc), doc.etag)

    async def require_export(self, name: str) -> Stored[ExportDefinition]:
        found = await self.export(name)
        if found is None:
            raise NotFound(f"no export definition named {name!r}")
        return found

    async def exports(self) -> list[Stored[ExportDefinition]]:
        """Every valid definition. One that no longer validates (edited in storage by
        hand, or older than a rule) is logged and left out, so it cannot stop the
        others from running."""
        found: list[Stored[ExportDefinition]] = []
        for doc_name in await self.documents.names(DEFINITIONS):
            try:
                doc = await self.documents.get(doc_name)
                if doc is not None:
                    found.append(Stored(self._definition(doc), doc.etag))
            except (ConfigError, DocumentError) as exc:
                log.error("export definition %s skipped: %s", doc_name, exc)
        return found

    async def save_export(self, definition: ExportDefinition, etag: str | None = None) -> str:
        """Create (``etag`` None: fails if it exists) or update (only at ``etag``)."""
        if not definition.name:
            raise ConfigError("an export definition in the catalog needs a name")
        doc_name = definition_name(definition.name)
        data = definition.to_json()
        if etag is None:
            return await self.documents.create(doc_name, data)
        return await self.documents.replace(doc_name, data, etag)

    async def delete_export(self, name: str, etag: str | None = None) -> bool:
        """Remove a definition: no event or schedule starts it afterwards."""
        return await self.documents.delete(definition_name(_export_key(name)), etag)

    @staticmethod
    def _definition(doc: Document) -> ExportDefinition:
        return exports.from_json(doc.data, where=doc.name)

    # -- connections -------------------------------------------------------------------

    async def connection(self, name: str) -> Stored[Connection] | None:
        doc = await self.documents.get(connection_name(check_connection(name)))
        if doc is None:
            return None
        return Stored(Connection.from_json(doc.data, doc.name), doc.etag)

    async def require_connection(self, name: str) -> Stored[Connection]:
        found = await self.connection(name)
        if found is None:
            raise NotFound(f"no connection named {name!r}")
        return found

    async def connections(self) -> list[Stored[Connection]]:
        found: list[Stored[Connection]] = []
        for doc_name in await self.documents.names(CONNECTIONS):
            doc = await self.documents.get(doc_name)
            if doc is not None:
                found.append(Stored(Connection.from_json(doc.data, doc.name), doc.etag))
        return found

    async def save_connection(self, connection: Connection, etag: str | None = None) -> str:
        doc_name = connection_name(connection.name)
        if etag is None:
            return await self.documents.create(doc_name, connection.to_json())
        return await self.documents.replace(doc_name, connection.to_json(), etag)

    async def status_of(self, connection: Connection) -> ConnectionStatus:
        """The status as it stands: a stored token marked unusable wins over the record."""
        if (
            connection.status is ConnectionStatus.CONNECTED
            and self._secrets is not None
            and await read_status(self._secrets, connection.name) is not None
        ):
            return ConnectionStatus.NEEDS_REAUTHORISATION
        return connection.status

    async def mark_connected(
        self, name: str, *, account_name: str | None = None, attempts: int = 5
    ) -> Connection:
        """Record a completed authorization and the account it reached (None: not
        known, and an earlier name is dropped with the account it named), retrying if
        someone edits the connection meanwhile."""
        for _ in range(attempts):
            stored = await self.require_connection(name)
            updated = replace(
                stored.value,
                status=ConnectionStatus.CONNECTED,
                connected_at=_now_iso(),
                account_name=account_name,
            )
            try:
                await self.save_connection(updated, stored.etag)
            except DocumentChanged:
                continue
            return updated
        raise DocumentChanged(f"connection {name!r} kept changing; try again")

    async def delete_connection(self, name: str, etag: str | None = None) -> bool:
        """Delete the connection and its tokens; True when there was a record.

        The tokens go first: a failure then leaves the record in place, so the delete
        can be repeated. Tokens left behind by an earlier half-done delete go too.
        """
        stored = await self.connection(name)
        if stored is not None and etag is not None and stored.etag != etag:
            raise DocumentChanged(f"connection {name!r} changed since it was read")
        if self._secrets is not None:
            for secret in (tokens_secret(name), status_secret(name), pending_secret(name)):
                await self._secrets.delete(secret)
        if stored is None:
            return False
        return await self.documents.delete(connection_name(name), stored.etag)

    # -- authorizations in flight -----------------------------------------------------------

    async def remember_authorization(
        self, state: str, connection: str, ttl: float, *, browser: str = ""
    ) -> None:
        """Note which connection the authorization with this state is for, so the
        callback (which carries only state and code) can find it, and ``browser``: the
        digest of the key the starting browser holds (shared.exports.authorizing)."""
        data = {
            "connection": check_connection(connection),
            "expires_at": time.time() + ttl,
            "browser": browser,
        }
        doc_name = state_name(state)
        existing = await self.documents.get(doc_name)
        if existing is None:
            await self.documents.create(doc_name, data)
        else:
            await self.documents.replace(doc_name, data, existing.etag)

    async def authorization_connection(self, state: str) -> str | None:
        """The connection a callback's state was issued for, or None (unknown, expired)."""
        found = await self.pending_authorization(state)
        return None if found is None else found[0]

    async def pending_authorization(self, state: str) -> tuple[str, str] | None:
        """The connection a callback's state was issued for and the digest of the key
        its starting browser holds; None when the state is unknown or expired."""
        doc = await self.documents.get(state_name(state))
        if doc is None or not isinstance(doc.data, dict):
            return None
        if float(doc.data.get("expires_at", 0)) <= time.time():
            await self.documents.delete(doc.name)
            return None
        name, browser = doc.data.get("connection"), doc.data.get("browser", "")
        if not isinstance(name, str) or not isinstance(browser, str):
            return None
        return name, browser

    async def forget_authorization(self, state: str) -> None:
        await self.documents.delete(state_name(state))


def _export_key(name: str) -> str:
    """An export name as given in a URL, checked before it becomes a document name."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
        raise ConfigError(
            f"export name {name[:70]!r}: use 1-63 lower-case letters, digits and dashes"
        )
    return name
