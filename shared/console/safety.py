"""What keeps the console's pages safe in a browser: the headers of every answer, and
the check that a submitted form came from one of the console's own pages.

Forms are protected against cross-site request forgery twice over:

- the double-submit token: every page sets a random token in a cookie the page's
  script cannot read (HttpOnly, SameSite=Strict, on the console's path only) and puts
  the same token in each of its forms; a POST whose form token is not the cookie's is
  refused. Another site can make a browser send the cookie (not with SameSite=Strict,
  but older browsers exist) yet cannot read it, so it cannot copy it into a form;
- the browser's own word: a POST whose ``Origin`` or ``Sec-Fetch-Site`` says it came
  from another site is refused whatever it carries.

The token protects against forgery only; who may do what is decided as for the API.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from shared.errors import CcexportError

FORM_COOKIE = "ccexport_form"
FORM_FIELD = "form_token"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""On every answer of the console: no inline script or style, nothing from elsewhere,
never framed, nothing sniffed, nothing cached (pages show who may see what)."""


class ForgedForm(CcexportError):
    """A form that did not come from one of the console's own pages."""


def form_cookie(headers: Mapping[str, str]) -> str | None:
    """The form token the browser holds, or None."""
    raw = headers.get("cookie") or headers.get("Cookie") or ""
    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    found = jar.get(FORM_COOKIE)
    return found.value if found is not None and found.value else None


def new_form_token() -> str:
    return secrets.token_urlsafe(32)


def set_form_cookie(token: str, path: str, *, secure: bool) -> str:
    """The ``Set-Cookie`` value that gives the browser ``token`` for the console's path."""
    attributes = f"{FORM_COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict"
    return attributes + ("; Secure" if secure else "")


def check_form(form_token: str | None, headers: Mapping[str, str], own_origin: str) -> None:
    """Refuse (ForgedForm) a POST that did not come from one of the console's pages."""
    site = (headers.get("sec-fetch-site") or headers.get("Sec-Fetch-Site") or "").lower()
    if site and site not in ("same-origin", "none"):
        raise ForgedForm("this form was sent from another site; open the console and try again")
    origin = headers.get("origin") or headers.get("Origin")
    if origin and origin != "null" and _origin(origin) != _origin(own_origin):
        raise ForgedForm("this form was sent from another site; open the console and try again")
    held = form_cookie(headers)
    if not held or not form_token or not hmac.compare_digest(held, form_token):
        raise ForgedForm(
            "this form's security token does not match (the page was open too long, or "
            "came from elsewhere); reload the page and send it again"
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
