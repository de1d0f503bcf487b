"""What the mirror-mode activities give: ``find_members`` (before any upload: who is on
the lists, what would be removed) and ``apply_removals`` (after the imports).

A run stops for confirmation, before anything is sent or removed, when a list would
lose more than the definition's ``max_removal_share`` (``ListPlan.share``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ListPlan:
    """One list of a mirror run: its members, and what leaves it."""

    list_id: str
    members: int = 0
    """Members when looked at (before this run's imports)."""
    remove: int = 0
    """Members this export added that left the segment: to be removed."""
    kept_for_others: int = 0
    """Leavers kept because another export's segment still has them."""

    def share(self) -> float:
        return self.remove / self.members if self.members else 0.0


@dataclass(frozen=True)
class MembersResult:
    """``find_members``'s result: per list, members and planned removals (no contacts)."""

    lists: tuple[ListPlan, ...] = ()
    requests: int = 0
    via: str = ""
    """How the members were found: "contact_export" or "paging"."""
    error: str | None = None
    resets_at: str | None = None

    @property
    def removals(self) -> int:
        return sum(p.remove for p in self.lists)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "lists": [asdict(p) for p in self.lists]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> MembersResult:
        if not data:
            return cls()
        return cls(**{**data, "lists": tuple(ListPlan(**p) for p in data.get("lists", ()))})


@dataclass(frozen=True)
class RemovalResult:
    """``apply_removals``'s result: the membership activities it started (or had)."""

    activity_ids: tuple[str, ...] = ()
    contacts: int = 0
    """Membership removals asked for, over all lists."""
    requests: int = 0
    error: str | None = None
    resets_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "activity_ids": list(self.activity_ids)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RemovalResult:
        if not data:
            return cls()
        return cls(**{**data, "activity_ids": tuple(data.get("activity_ids", ()))})


@dataclass(frozen=True)
class Removals:
    """What became of the removals, for the report and the state."""

    planned: int = 0
    asked: int = 0
    """Membership removals sent to Constant Contact."""
    activities: int = 0
    activities_completed: int = 0
    error: str | None = None

    @property
    def done(self) -> bool:
        return (
            self.error is None
            and self.asked == self.planned
            and self.activities_completed == self.activities
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Removals:
        return cls(**data) if data else cls()
