"""How a request reaches Constant Contact: one aiohttp session, the pacer, the retries,
and what a refusal means.

``Transport`` is the part of the client that knows HTTP and nothing of the endpoints:
every request goes through the process's ``Pacer`` (4 requests/s and the daily quota,
per API key) and through one retry loop that treats each kind of failure as the API
documents it (the ``TooManyRequests``, ``InternalError`` and ``Unauthorized``
responses of ``contract/constant-contact-v3.yaml``):

- 429 ``throttled``: everyone backs off (with jitter) and the request is retried, a
  bounded number of times.
- 429 ``quota_exceeded``: nothing more is sent until 00:00 UTC; this and every other
  caller sharing the pacer fail at once with ``QuotaExhausted``.
- 5xx and connection errors: bounded retries with exponential backoff and jitter.
- 401: one forced token refresh, then one more try.
- any other 4xx: ``RemoteError`` carrying the API's own error messages.

Logs name the method, the path template, the status and the attempt; never a URL
with its query (it may hold an email), a header, a body or a token. Error text taken
from the API passes through ``scrub`` first, for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin

import aiohttp
import orjson
from yarl import URL

from shared.constant_contact.pacing import Pacer
from shared.errors import RemoteError, ThrottledGiveUp
from shared.storage.closing import AsyncClosing
from shared.telemetry import meters
from shared.telemetry.spans import request_span

__all__ = [
    "Call",
    "ClientStats",
    "RetryPolicy",
    "TokenProvider",
    "Transport",
    "api_messages",
    "error_key",
    "scrub",
]

log = logging.getLogger(__name__)

# An async callable: the current access token; with True, a new one (the last was refused).
TokenProvider = Callable[[bool], Awaitable[str]]

_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+\.[A-Za-z]{2,}")


def scrub(text: str) -> str:
    """Text fit for a log line or an error: email addresses replaced."""
    return _EMAIL.sub("<email>", text)


# --- policy and counters ---------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Small values make tests fast; the defaults suit production."""

    attempts: int = 5  # tries for 5xx and connection errors, the first included
    throttled_attempts: int = 10  # tries while answered 429 throttled
    backoff_base: float = 0.5  # seconds before the first retry (doubling, capped)
    backoff_cap: float = 8.0  # a throttle lasts a second; a 5xx outage, longer retries won't fix
    request_timeout: float = 120.0  # seconds for one request, body included

    def delay(self, retry: int) -> float:
        """Exponential backoff with jitter: between half and all of the ceiling."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(retry - 1, 0))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


@dataclass
class ClientStats:
    """What the client did, for reports and tests."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    token_refreshes: int = 0
    # Import POSTs sent again after a connection error or 5xx: the first may have
    # been accepted, so each may have created a second (harmless) activity.
    import_resends: int = 0


@dataclass
class _Tries:
    attempt: int = 0
    failures: int = 0  # 5xx and connection errors
    throttled: int = 0
    refreshed: bool = False


@dataclass(frozen=True)
class Call:
    """One request as the retry loop sends it, attempt after attempt."""

    method: str
    template: str  # for logs and errors, e.g. "GET /contact_lists/{list_id}"
    url: URL
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    form: Callable[[], aiohttp.FormData] | None = None  # a fresh one per attempt
    accept: str = "application/json"
    is_import: bool = False


# --- the transport ---------------------------------------------------------------------


class Transport(AsyncClosing):
    """The HTTP side of a client for one connected account (one token provider).

    Share one ``Pacer`` between every client of a process that uses the same API
    key: the limits are per key, not per client.
    """

    def __init__(
        self,
        api_base: str,
        tokens: TokenProvider,
        pacer: Pacer,
        *,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._api = URL(api_base.rstrip("/"))
        self._span_base = str(self._api.with_query(None).with_fragment(None))
        """What a request's span names the API by: no query, whatever the setting held."""
        self._tokens = tokens
        self._pacer = pacer
        self._retry = retry or RetryPolicy()
        self._session = session
        self._own_session = session is None
        self.stats = ClientStats()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._retry.request_timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def _url(self, *parts: str) -> URL:
        url = self._api
        for part in parts:
            url = url / part
        return url

    def _absolute(self, href: str, template: str) -> URL:
        """A ``_links`` href from the answer to ``template``, resolved against the API
        base and followed exactly (its cursor is opaque), but only inside the API.

        The href comes from a response, and the request that follows it carries the
        bearer token: an href naming another host (absolute, ``//host``, or a relative
        ``@host/x`` pasted after the origin) would hand that host the account's token.
        So the resolved URL must have the API base's scheme, host and port, no user
        part, and a path under the base path with no ``.`` or ``..`` segment (decoded,
        since servers decode ``%2e``); anything else is a RemoteError and nothing is
        sent. The href itself is never quoted: its query may hold an email address.
        """
        url = URL(urljoin(str(self._api), href), encoded=True)
        segments = unquote(url.raw_path).split("/")
        inside = (
            url.scheme == self._api.scheme
            and (url.host or "").lower() == (self._api.host or "").lower()
            and url.port == self._api.port
            and url.raw_user is None
            and url.raw_password is None
            and (url.raw_path + "/").startswith(self._api.raw_path.rstrip("/") + "/")
            and "." not in segments
            and ".." not in segments
        )
        if not inside:
            raise RemoteError(
                f"{template}: Constant Contact answered with a link outside its API "
                f"({self._api}); it was not followed and nothing was sent to it"
            )
        return url

    # -- the one retry loop ------------------------------------------------------------

    async def _request(self, call: Call) -> bytes:
        """Send until success or a bounded give-up; returns the response body.

        The whole call is one span (shared/telemetry/spans.py), every attempt one
        count of the key's requests."""
        key = self._pacer.key
        with request_span(call.template, base=self._span_base, api_key=key) as span:
            tries = _Tries()
            try:
                while True:
                    tries.attempt += 1
                    try:
                        status, raw = await self._send(call)
                    except (
                        aiohttp.ClientConnectionError,
                        aiohttp.ClientPayloadError,
                        TimeoutError,
                    ) as exc:
                        meters.count_request(key, call.template, None)
                        span.error = type(exc).__name__
                        await self._transient(call, tries, f"connection error ({span.error})")
                        continue
                    except aiohttp.ClientError as exc:
                        # Not transient (e.g. an invalid URL); its text may hold the query.
                        span.error = type(exc).__name__
                        raise RemoteError(f"{call.template}: {span.error}") from None
                    meters.count_request(key, call.template, status)
                    span.status, span.error = status, None
                    log.debug("%s -> %d (attempt %d)", call.template, status, tries.attempt)
                    if 200 <= status < 300:
                        return raw
                    span.error = refusal_kind(status, raw)
                    await self._after_refusal(call, tries, status, raw)
            finally:
                span.resends, span.throttled = tries.attempt - 1, tries.throttled

    async def _send(self, call: Call) -> tuple[int, bytes]:
        # The token twice. Before the slot, so that a first read of the store or a
        # refresh happens while the request is not yet due, not between its slot and
        # its start, where it would make the request late and bunch it with the next.
        # After the slot, so that the request carries the token current when it leaves:
        # a wait can last seconds, in which another process may refresh the connection
        # (24 checks at once after expiry were refused with 401 on a token read before
        # it). A token manager answers the second from memory.
        await self._tokens(False)
        await self._pacer.wait()
        token = await self._tokens(False)
        headers = {"Authorization": f"Bearer {token}", "Accept": call.accept}
        data: Any = None
        if call.body is not None:
            headers["Content-Type"] = "application/json"
            data = call.body
        elif call.form is not None:
            data = call.form()  # aiohttp sets multipart/form-data and its boundary
        self.stats.requests += 1
        async with self._http().request(
            call.method, call.url, params=call.params, data=data, headers=headers
        ) as response:
            return response.status, await response.read()

    async def _after_refusal(self, call: Call, tries: _Tries, status: int, raw: bytes) -> None:
        """Decide what a non-2xx answer means: return to retry, or raise."""
        if status == 401 and not tries.refreshed:
            # The token may have expired in flight or been revoked: one refresh.
            tries.refreshed = True
            self.stats.token_refreshes += 1
            log.info("%s -> 401; refreshing the access token once", call.template)
            await self._tokens(True)
            return
        message = api_messages(raw)
        if status == 429:
            if error_key(raw) == "quota_exceeded":
                log.warning("%s -> 429 quota_exceeded; sending stops", call.template)
                meters.count_quota_exhausted(self._pacer.key)
                raise self._pacer.stop_for_the_day()
            tries.throttled += 1
            self.stats.throttled += 1
            meters.count_throttled(self._pacer.key)
            if tries.throttled >= self._retry.throttled_attempts:
                raise ThrottledGiveUp(
                    f"{call.template}: still throttled by Constant Contact (429 {message}) "
                    f"after {tries.throttled} attempts"
                )
            delay = self._retry.delay(tries.throttled)
            self._pacer.hold_off(delay)  # the limit is per key: everyone waits
            self.stats.retries += 1
            log.info(
                "%s -> 429 throttled (attempt %d); backing off %.2fs",
                call.template, tries.attempt, delay,
            )  # fmt: skip
            return
        if status >= 500:
            await self._transient(call, tries, f"HTTP {status} ({message})", status)
            return
        if status == 401:
            raise RemoteError(
                f"{call.template}: Constant Contact refused the access token even after a "
                f"refresh (401 {message}); the connection may need `ccexport connect` again",
                status=401,
            )
        raise RemoteError(
            f"{call.template}: Constant Contact refused the request ({status}): {message}",
            status=status,
        )

    async def _transient(
        self, call: Call, tries: _Tries, what: str, status: int | None = None
    ) -> None:
        """A 5xx or connection error: wait and return to retry, or give up."""
        tries.failures += 1
        if tries.failures >= self._retry.attempts:
            raise RemoteError(
                f"{call.template}: {what}; gave up after {tries.failures} attempts",
                status=status,
            )
        delay = self._retry.delay(tries.failures)
        self.stats.retries += 1
        if call.is_import:
            # The import may have been accepted before the failure. Sending it again
            # is safe (imports are idempotent per email) but may create a second
            # activity; it is counted so the run report can say so.
            self.stats.import_resends += 1
            log.warning(
                "%s: %s (attempt %d); sending again in %.2fs, which may create a second "
                "import activity", call.template, what, tries.attempt, delay,
            )  # fmt: skip
        else:
            log.warning(
                "%s: %s (attempt %d); retrying in %.2fs", call.template, what, tries.attempt, delay
            )
        await asyncio.sleep(delay)

    async def _json(self, call: Call) -> Any:
        raw = await self._request(call)
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise RemoteError(f"{call.template}: Constant Contact sent malformed JSON") from None


# --- error bodies ------------------------------------------------------------------------------


def _error_items(raw: bytes) -> list[dict[str, Any]]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    items = doc if isinstance(doc, list) else [doc]
    return [item for item in items if isinstance(item, dict)]


def refusal_kind(status: int, raw: bytes) -> str:
    """What a refusal was, in a word fit for telemetry: the API's ``error_key`` for a
    429 (``throttled``, ``quota_exceeded``), else ``http_<status>``."""
    key = error_key(raw) if status == 429 else None
    return key if key in ("throttled", "quota_exceeded") else f"http_{status}"


def error_key(raw: bytes) -> str | None:
    """The ``error_key`` of an error body (the array or the single-object form)."""
    for item in _error_items(raw):
        key = item.get("error_key")
        if isinstance(key, str):
            return key
    return None


def api_messages(raw: bytes) -> str:
    """The API's own error messages, joined, emails scrubbed, kept short."""
    messages: list[str] = []
    for item in _error_items(raw):
        for name in ("error_message", "error_description", "error_key", "error"):
            value = item.get(name)
            if isinstance(value, str) and value:
                messages.append(value)
                break
    if not messages:
        return "no error message" if not raw else "a non-JSON error body"
    return scrub("; ".join(messages))[:500]
