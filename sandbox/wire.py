"""The wire formats Constant Contact uses: JSON encoding, timestamps and error bodies.

Every response of the sandbox is built here or from these pieces, so the shapes the
official spec and the developer guide document live in one place:

- general errors are a JSON *array* of ``{error_key, error_message}`` (``APIErrorSchema``);
- 401 is a single object ``{"error_key": "unauthorized", ...}`` (``AuthorizationErrorSchema``);
- 429 bodies are single objects, ``throttled`` (per-second limit) or ``quota_exceeded``
  (daily quota), as the rate-limits guide shows;
- OAuth errors use the OAuth 2.0 shape ``{error, error_description}`` (RFC 6749 §5.2).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

JSON_TYPE = "application/json"


class ApiError(Exception):
    """A request the API refuses; the app turns it into the documented error array."""

    def __init__(self, status: int, message: str, error_key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_key = error_key or _ERROR_KEYS.get(status, "contacts.api.error")

    def response(self) -> web.Response:
        return api_error(self.status, self.error_key, self.message)


class Refusal(ApiError):
    """A refusal whose body is not the error array (e.g. the 429 objects)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status, "refused")
        self._response = response

    def response(self) -> web.Response:
        return self._response


_ERROR_KEYS = {
    400: "contacts.api.validation.error",
    404: "contacts.api.not_found",
    409: "contacts.api.conflict",
    415: "contacts.api.unsupported_media_type",
    429: "throttled",
}


async def json_body(request: web.Request) -> Any:
    """The request's JSON body; 415 unless it is sent as application/json, 400 if malformed."""
    if request.content_type != JSON_TYPE:
        raise ApiError(415, "The payload must be JSON and Content-Type must be application/json.")
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc.msg}.") from None


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer.") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}.")
    return value


def query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in {"true", "false"}:
        raise ApiError(400, f"{name} must be true or false.")
    return raw == "true"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response encoded with orjson (fast enough for 500-contact pages)."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type=JSON_TYPE, headers=headers
    )


def iso(ts: float) -> str:
    """An RFC 3339 UTC timestamp with milliseconds, as the API writes them."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def api_error(status: int, error_key: str, message: str) -> web.Response:
    """The general error body: an array with one ``{error_key, error_message}``."""
    return json_response([{"error_key": error_key, "error_message": message}], status)


def unauthorized() -> web.Response:
    return json_response({"error_key": "unauthorized", "error_message": "Unauthorized"}, 401)


def forbidden() -> web.Response:
    return api_error(403, "forbidden", "You lack the necessary scopes or user privileges.")


def throttled(message: str = "Too Many Requests") -> web.Response:
    return json_response({"error_key": "throttled", "error_message": message}, 429)


def quota_exceeded() -> web.Response:
    return json_response({"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}, 429)


def server_error(status: int) -> web.Response:
    """500 or 503, with the spec's descriptions as messages."""
    if status == 503:
        return api_error(
            503, "service_unavailable", "Our internal service is temporarily unavailable."
        )
    return api_error(500, "internal_error", "There was a problem with our internal service.")


def oauth_error(status: int, error: str, description: str) -> web.Response:
    return json_response({"error": error, "error_description": description}, status)


def encode_cursor(state: dict[str, Any]) -> str:
    """An opaque paging cursor; the next link carries the whole query in it."""
    return base64.urlsafe_b64encode(orjson.dumps(state)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any] | None:
    """The state behind a cursor, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None
