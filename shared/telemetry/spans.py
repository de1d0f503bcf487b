"""Spans: one per Constant Contact request, one per step of a run.

A request's span covers the whole call, retries included, so a trace shows one bar
per thing ccexport asked for, with how many times it had to ask
(``http.request.resend_count``) and how many of those were throttled answers. It
is named and described by the endpoint's template (``POST
/activities/contacts_json_import``), never the URL sent: a query string or a path
can hold an address or an id of a person. Its error, when it ends in one, is a kind
(``throttled``, ``quota_exceeded``, ``http_503``, ``ConnectionError``...), never
the API's text.

A step's span (``ccexport prepare_segment``...) carries the run id, so every
request span under it belongs to a run that a query can name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

SCOPE = "ccexport"
"""The instrumentation scope every span and instrument of the app is made under."""

RUN_ID = "ccexport.run_id"
EXPORT = "ccexport.export"
CONNECTION = "ccexport.connection"
API_KEY = "ccexport.api_key"
THROTTLED = "ccexport.throttled"


def tracer() -> trace.Tracer:
    """The app's tracer, from whatever provider is installed now (none: no-op)."""
    return trace.get_tracer(SCOPE)


@dataclass
class RequestSpan:
    """What one call to Constant Contact came to, set on its span as it ends."""

    span: Span
    status: int | None = None
    resends: int = 0
    throttled: int = 0
    error: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def split_template(template: str) -> tuple[str, str]:
    """``"GET /contact_lists/{list_id}"`` -> ``("GET", "/contact_lists/{list_id}")``."""
    method, _, path = template.partition(" ")
    return (method, path) if path else ("", template)


@contextmanager
def request_span(template: str, *, base: str, api_key: str) -> Iterator[RequestSpan]:
    """A client span for one call to Constant Contact, ended with its outcome.

    ``url.full`` is the API base joined to the template (``.../v3/activities/{activity_id}``):
    Application Insights names an HTTP dependency by its URL's path, and the template,
    unlike the URL sent, names no contact, activity or list and has no query."""
    method, path = split_template(template)
    attributes = {
        "http.request.method": method or "_OTHER",
        "url.template": path,
        "url.full": base.rstrip("/") + path,
        "server.address": urlsplit(base).hostname or "",
        API_KEY: api_key,
    }
    with tracer().start_as_current_span(
        template,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,  # an exception's text is not ours to send
        set_status_on_exception=False,
    ) as span:
        call = RequestSpan(span)
        try:
            yield call
        except BaseException as exc:
            call.error = call.error or type(exc).__name__
            raise
        finally:
            _end(call)


def _end(call: RequestSpan) -> None:
    span = call.span
    if call.status is not None:
        span.set_attribute("http.response.status_code", call.status)
    span.set_attribute("http.request.resend_count", call.resends)
    span.set_attribute(THROTTLED, call.throttled)
    if call.error is not None:
        span.set_attribute("error.type", call.error)
        span.set_status(Status(StatusCode.ERROR, call.error))


@contextmanager
def step_span(step: str, run_id: str, **names: str) -> Iterator[Span]:
    """An internal span for one step of a run (an activity), carrying the run's id
    and the names given (``export=``, ``connection=``) as ``ccexport.*``."""
    attributes = {RUN_ID: run_id, **{f"ccexport.{key}": value for key, value in names.items()}}
    with tracer().start_as_current_span(
        f"ccexport {step}",
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
