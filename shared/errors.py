"""One small hierarchy of errors, by meaning, so the CLI and HTTP layers can map each
kind to a one-line message and an exit or status code.

Messages are written for the person who has to act on them. They never carry a
token, a secret or an email address: those stay in the rejects file or nowhere.
"""

from __future__ import annotations


class CcexportError(Exception):
    """Base of every error ccexport raises on purpose."""


class InputError(CcexportError):
    """Input the user can fix: a missing column, an undecodable file, a bad list id."""


class ConfigError(InputError):
    """An export definition or setting that is invalid."""


class RemoteError(CcexportError):
    """Constant Contact (or another service) refused a request; carries its own message."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class QuotaExhausted(RemoteError):
    """The daily request quota is used up; nothing more can be sent before it resets."""

    def __init__(self, message: str, *, resets_at: str) -> None:
        super().__init__(message, status=429)
        self.resets_at = resets_at


class ThrottledGiveUp(RemoteError):
    """Constant Contact kept answering 429 ``throttled`` after every bounded retry."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=429)


class ReauthorizationRequired(CcexportError):
    """A connection's tokens can no longer be refreshed: someone must run connect again.

    Raised for ``invalid_grant``, a missing token bundle, and a rotated refresh token
    that could not be stored. The message names the connection, never a token.
    """

    def __init__(self, connection: str, reason: str) -> None:
        super().__init__(
            f"connection {connection!r} needs to be reconnected: {reason} "
            f"(run `ccexport connect --connection {connection}`)"
        )
        self.connection = connection
        self.reason = reason


class AuthorizationError(InputError):
    """An OAuth callback that cannot be accepted: forged, expired or replayed state,
    or the account declined. Starting the authorization again is the fix."""
