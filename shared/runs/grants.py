"""What a run was allowed on when it started: the facts its activities check again.

A run is started by a person through the HTTP API (their principal id and roles,
checked against the connection then), or by the app itself (a blob event, the
schedule). The grant carries those facts and the id of the connection the run was
started with, never a token: the activities compare them with the catalog as it
stands before every step that reads the segment or talks to Constant Contact
(shared/runs/recheck.py), so a connection removed, re-created, withdrawn from
consent or taken from the starter's roles stops the run within one upload window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import CcexportError, ConfigError

if TYPE_CHECKING:  # the run's contract stays light: `ccexport prepare` loads it
    from shared.exports.access import Caller


class RunStopped(CcexportError):
    """The run's grant no longer holds: it may not go on. The message says why, in
    words a person can act on (shared/runs/recheck.py decides)."""


APP_TRIGGERS = frozenset({"blob", "timer"})
"""Triggers under which the app starts runs itself, for every enabled export."""


@dataclass(frozen=True)
class RunGrant:
    """Who started a run and with which connection (by id, not only by name)."""

    connection_id: str
    """The id of the connection the run was started with (``Connection.id``)."""
    started_by: str
    """The starter's principal id, ``function-key``, or the trigger (``blob``,
    ``timer``) when the app started it; never a name or an email address."""
    roles: tuple[str, ...] = ()
    """The starter's roles, case-folded, as they were when the run started."""
    admin: bool = False

    @classmethod
    def given(cls, connection_id: str, trigger: str, caller: Caller | None) -> RunGrant:
        """The grant of a run started under ``trigger`` by ``caller`` (None: the app)."""
        return cls(
            connection_id=connection_id,
            started_by=trigger if caller is None else caller.id,
            roles=() if caller is None else tuple(sorted(caller.roles)),
            admin=caller is not None and caller.is_admin,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "started_by": self.started_by,
            "roles": list(self.roles),
            "admin": self.admin,
        }

    @classmethod
    def from_json(cls, data: Any) -> RunGrant:
        if not isinstance(data, dict):
            raise ConfigError("a run's grant must be a JSON object")
        roles = data.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ConfigError("a run's grant: roles must be a list of role names")
        return cls(
            connection_id=str(data.get("connection_id") or ""),
            started_by=str(data.get("started_by") or "")[:128],
            roles=tuple(roles),
            admin=data.get("admin") is True,
        )


@dataclass(frozen=True)
class RunScope:
    """What the activities check before each step: the run's export (by name), its
    source, its connection, what started it and its grant. Small, so every upload
    and poll carries it."""

    export: str
    source: str
    connection: str
    trigger: str
    grant: RunGrant

    def to_json(self) -> dict[str, Any]:
        return {
            "export": self.export,
            "source": self.source,
            "connection": self.connection,
            "trigger": self.trigger,
            "grant": self.grant.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> RunScope | None:
        """None for ``None``; a ConfigError for anything else that is not a scope."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ConfigError("a run's scope must be a JSON object")
        return cls(
            export=str(data.get("export") or ""),
            source=str(data.get("source") or ""),
            connection=str(data.get("connection") or ""),
            trigger=str(data.get("trigger") or ""),
            grant=RunGrant.from_json(data.get("grant")),
        )
