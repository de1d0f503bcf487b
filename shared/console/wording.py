"""Refusals in words a person can act on, each with the action that fixes it.

The console never shows a stack trace or raw JSON: an error becomes a ``Problem``,
a heading, the sentence ccexport's own error already says (they are written for
people, and never quote a data value), and where there is one, a link to the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

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
