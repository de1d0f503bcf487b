"""What the connections pages show, and the connection form they send.

The words are Customer Insights' (Admin > Connections): Display name, Who can use this
connection, I agree, Connect, Save. The pages hold no rule of their own: who sees
which connection is shared.exports.access's; what a connection may say is
shared.exports.catalog's (``connection_from_request``), and the form is saved as the
HTTP API's ``PUT`` saves it (shared.exports.editing.save_connection), with the ETag
the page was drawn from, so two admins editing at once do not overwrite each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.console.forms import Form
from shared.console.overview import ConnectionLine
from shared.console.wording import when
from shared.errors import InputError
from shared.exports.access import ADMIN_ROLE, Caller, usable_connection, usable_connections
from shared.exports.catalog import Catalog, Connection, ConnectionStatus, Stored
from shared.exports.editing import save_connection

NEW = "new"
"""The route name of the add form (``connections/new``): a connection named ``new`` is
reached through the HTTP API only."""

STATUS_WORDS = {
    ConnectionStatus.NOT_CONNECTED: "Not connected",
    ConnectionStatus.CONNECTED: "Connected",
    ConnectionStatus.NEEDS_REAUTHORISATION: "Needs re-authorisation",
}

KNOWN_ROLES = ("contributor",)
"""The app role the deployment registers besides admin (infra/auth/app-roles.json),
offered as a checkbox; so is every role a connection already names, and a new one
can be typed."""

PRIVACY_TERMS = (
    "When an export runs over this connection, ccexport sends the email addresses, "
    "first and last names, and any other fields the export maps, of the people in its "
    "segments to Constant Contact, and adds them to the account's lists.",
    "Constant Contact is a processor outside Dynamics 365 Customer Insights and outside "
    "this Azure subscription. It keeps and processes that data under your "
    "organization's own agreement with Constant Contact, not under Microsoft's terms.",
    "Agree only if your organization may send these people's data there for email "
    "marketing: the lawful basis, the people's consent, and the agreement are yours to "
    "have. Until an admin agrees, no export sends anything over this connection.",
)
"""The data privacy and compliance terms an admin agrees to (``I agree``)."""

DONE = {
    "created": "The connection was added. Connect it to a Constant Contact account next.",
    "saved": "Saved.",
    "connected": "Connected: the Constant Contact account is connected.",
    "removed": "The connection was removed, and its tokens deleted.",
}
"""The notices a page shows after a change (``?done=``): fixed words, never a value."""


def done_notice(value: str) -> str | None:
    return DONE.get(value)


@dataclass(frozen=True)
class ConnectionView:
    """One connection as a page shows it, with its status as it stands."""

    connection: Connection
    status: ConnectionStatus
    etag: str

    @property
    def status_words(self) -> str:
        return STATUS_WORDS[self.status]

    @property
    def connected_on(self) -> str:
        return when(self.connection.connected_at)

    @property
    def account(self) -> str:
        """The Constant Contact account it reaches: its organization's name, read
        when it connected; else when it connected; else that it reaches none yet."""
        if self.status is ConnectionStatus.NOT_CONNECTED:
            return "None yet"
        if self.connection.account_name:
            return self.connection.account_name
        return f"Connected on {self.connected_on}" if self.connected_on else "Not known"

    @property
    def roles_words(self) -> str:
        named = ", ".join(self.connection.roles)
        return f"Admins, and {named}" if named else "Admins only"

    @property
    def consent_words(self) -> str:
        consent = self.connection.consent
        if consent is None:
            return "Not agreed: no export sends over this connection until an admin agrees"
        agreed = when(consent.accepted_at)
        return f"Agreed on {agreed}" if agreed else "Agreed"

    @property
    def attention(self) -> str | None:
        """What an admin must do before exports can send with it (the home page's words)."""
        return ConnectionLine(self.connection, self.status).attention


async def _view(catalog: Catalog, stored: Stored[Connection]) -> ConnectionView:
    return ConnectionView(stored.value, await catalog.status_of(stored.value), stored.etag)


async def connection_views(catalog: Catalog, caller: Caller) -> list[ConnectionView]:
    """The connections the caller may use (every one, for an admin), by display name."""
    views = [await _view(catalog, s) for s in await usable_connections(catalog, caller)]
    return sorted(views, key=lambda v: (v.connection.display_name.casefold(), v.connection.name))


async def connection_view(catalog: Catalog, caller: Caller, name: str) -> ConnectionView:
    """One connection the caller may use; one they may not is answered as unknown."""
    return await _view(catalog, await usable_connection(catalog, caller, name))


# --- the form ------------------------------------------------------------------------------

_ROLE_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass(frozen=True)
class RoleChoice:
    role: str
    checked: bool


@dataclass(frozen=True)
class ConnectionForm:
    """What the add and edit forms hold, read back from a submitted form."""

    name: str = ""
    display_name: str = ""
    roles: tuple[str, ...] = ()
    """The roles ticked."""
    other_roles: str = ""
    """More roles, typed (commas or blanks between them)."""
    agreed: bool = False
    etag: str = ""
    """The ETag of the connection the edit form was drawn from."""

    @classmethod
    def of(cls, view: ConnectionView) -> ConnectionForm:
        connection = view.connection
        return cls(
            name=connection.name,
            display_name=connection.display_name,
            roles=connection.roles,
            agreed=connection.consent is not None,
            etag=view.etag,
        )

    @classmethod
    def read(cls, form: Form, name: str = "") -> ConnectionForm:
        """The submitted form; ``name`` is the edited connection's (the add form sends
        its own)."""
        return cls(
            name=name or form.get("name"),
            display_name=form.get("display_name"),
            roles=tuple(r for r in form.all("role") if r),
            other_roles=form.get("other_roles"),
            agreed=form.checked("agree"),
            etag=form.get("etag"),
        )

    @property
    def all_roles(self) -> list[str]:
        typed = [r for r in _ROLE_SEPARATORS.split(self.other_roles) if r]
        return list(dict.fromkeys([*self.roles, *typed]))

    def body(self) -> dict[str, Any]:
        """What the HTTP API's ``PUT /api/connections/{name}`` would be sent."""
        return {
            "display_name": self.display_name,
            "roles": self.all_roles,
            "privacy_consent": {"accepted": self.agreed},
        }

    def choices(self, offered: Iterable[str]) -> list[RoleChoice]:
        """A checkbox for each role offered and each the form names, admin left out
        (admins may always use every connection)."""
        ticked = {r.casefold() for r in self.roles}
        roles: dict[str, str] = {}
        for role in (*offered, *self.roles):
            if role.casefold() != ADMIN_ROLE:
                roles.setdefault(role.casefold(), role)
        return [RoleChoice(role, key in ticked) for key, role in roles.items()]


async def offered_roles(catalog: Catalog) -> list[str]:
    """The roles the form offers: the deployment's, then every one a connection names."""
    named = [role for stored in await catalog.connections() for role in stored.value.roles]
    return list(dict.fromkeys([*KNOWN_ROLES, *sorted(named, key=str.casefold)]))


class NameTaken(InputError):
    """The add form names a connection that exists."""


async def save_form(
    catalog: Catalog, caller: Caller, form: ConnectionForm, *, new: bool
) -> Stored[Connection]:
    """Save the add form (create only) or the edit form (at the ETag it was drawn
    from). The caller is an admin (the pages check it before)."""
    if new and form.name == NEW:
        raise NameTaken(
            f"the console keeps {NEW!r} for its add form: choose another connection name"
        )
    if new and await catalog.connection(form.name) is not None:
        raise NameTaken(
            f"a connection named {form.name!r} exists already: choose another connection "
            "name, or open that connection to change it"
        )
    return await save_connection(
        catalog,
        form.name,
        form.body(),
        principal_id=caller.id,
        if_match=None if new else form.etag or None,
    )


# --- removing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """What removing a connection stops, for the confirmation page."""

    view: ConnectionView
    exports: tuple[str, ...]
    """The export definitions that send over it: they stay, and send nothing more."""


async def removal(catalog: Catalog, caller: Caller, name: str) -> Removal:
    view = await connection_view(catalog, caller, name)
    sending = [
        stored.value.name or ""
        for stored in await catalog.exports()
        if view.connection.sends(stored.value)
    ]
    return Removal(view, tuple(sorted(sending)))
