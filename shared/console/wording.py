"""Refusals in words a person can act on, each with the action that fixes it.

The console never shows a stack trace or raw JSON: an error becomes a ``Problem``,
a heading, the sentence ccexport's own error already says (they are written for
people, and never quote a data value), and where there is one, a link to the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SIGN_IN = "/.auth/login/aad?post_login_redirect_uri={console}"
"""App Service authentication's sign-in, back to the console afterwards."""


@dataclass(frozen=True)
class Action:
    label: str
    href: str


@dataclass(frozen=True)
class Problem:
    """What the error page says."""

    status: int
    title: str
    detail: str
    action: Action | None = None


TITLES = {
    400: "That cannot be saved or done as it is",
    401: "Sign in first",
    403: "You may not do this",
    404: "Not found",
    405: "Not here",
    409: "Not now",
    412: "Someone changed this meanwhile",
}


def problem(status: int, detail: str, *, console: str, action: Action | None = None) -> Problem:
    """The page for an error answered with ``status``; ``console`` is the console's root."""
    if action is None and status == 401:
        action = Action("Sign in", SIGN_IN.format(console=console))
    if action is None and status == 412:
        action = Action("Reload the page", "")
    if action is None and status in (404, 405):
        action = Action("Back to the console", console)
    return Problem(status, TITLES.get(status, "Something went wrong"), detail, action)


REASONS: Mapping[str, str] = {
    "missing_email": "no email address",
    "invalid_email": "not an email address",
    "email_too_long": "address longer than 50 characters",
    "non_ascii_email": "address with characters Constant Contact does not take",
    "ragged_row": "wrong number of fields",
    "unbalanced_quote": "a quote left open swallowed the lines after it",
    "nul_character": "a NUL character",
    "duplicate": "the same address as an earlier row",
}
"""Reject reasons (rejects.csv's ``reason`` column, shared/constant_contact/contacts.py),
in words: one wording for the preview, the report and the search."""


def moment(value: Any) -> datetime | None:
    """A stored time (an ISO string, ``Z`` or offset, or a datetime) as aware UTC."""
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, str) and value:
        try:
            found = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def when(value: Any) -> str:
    """A time as people read it: ``2026-11-28 09:45 UTC``; empty when there is none."""
    found = moment(value)
    return found.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if found else ""


def quota_wait(custom_status: Mapping[str, Any] | None) -> str:
    """Why a run waiting for the daily quota sends nothing yet, and when it goes on.

    The custom status says the run's estimate and when its timer fires
    (shared/runs/contract.py); a person who does not want it to go then terminates it.
    """
    status = custom_status or {}
    estimated = status.get("requests_estimated")
    need = f"its {estimated:,} estimated requests" if isinstance(estimated, int) else "it"
    resumes = when(status.get("resumes_at"))
    return (
        f"what is left of the API key's daily request quota cannot carry {need}, so "
        "nothing has been sent; it starts by itself "
        + (f"at {resumes}, after the quota resets" if resumes else "after the quota resets")
        + " (to stop it instead, terminate the run)"
    )
