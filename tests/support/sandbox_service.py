"""Run the Constant Contact sandbox (and Prism in front of it) for tests, by PID.

``running_sandbox(**flags)`` starts ``python -m sandbox`` on a free 127.0.0.1 port and
yields a ``RunningSandbox``: its URLs, its client credentials, and small synchronous
helpers for the ``/__sandbox/`` controls (mint a token, create a list, read stats,
set faults). Flags are the CLI's, in Python spelling: ``rate_limit=0`` becomes
``--rate-limit 0``, ``rotating_refresh_tokens=True`` becomes the bare flag.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.services import ROOT, ServiceError, free_port, running

# The project's own Constant Contact contract (contract/README.md), in the repository.
CONTRACT = ROOT / "contract" / "constant-contact-v3.yaml"

# Never through a proxy: everything the tests call is on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class RunningSandbox:
    port: int
    pid: int
    client_id: str
    client_secret: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v3"

    @property
    def auth_base(self) -> str:
        return f"{self.base_url}/oauth2/default/v1"

    @property
    def authorize_url(self) -> str:
        return f"{self.auth_base}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.auth_base}/token"

    def ctct_settings(self) -> dict[str, str]:
        """The app settings that point ccexport at this sandbox."""
        return {
            "CTCT_CLIENT_ID": self.client_id,
            "CTCT_CLIENT_SECRET": self.client_secret,
            "CTCT_API_BASE": self.api_base,
            "CTCT_AUTH_BASE": self.auth_base,
        }

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call a ``/__sandbox/`` endpoint; returns its JSON, raises on an error status."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}/__sandbox/{path.lstrip('/')}", data=data, method=method
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServiceError(
                f"{method} /__sandbox/{path}: {exc.code} {exc.read()[:500]!r}"
            ) from None

    def tokens(self, scope: str = "contact_data offline_access") -> dict[str, Any]:
        """A token response as if the account had just connected the app."""
        result: dict[str, Any] = self.control("POST", "tokens", {"scope": scope})
        return result

    def access_token(self) -> str:
        return str(self.tokens()["access_token"])

    def auth_headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.access_token()}"}

    def create_list(self, name: str | None = None) -> str:
        """A new contact list (bypassing limits); returns its list_id."""
        created = self.control("POST", "lists", {"name": name or f"list-{uuid.uuid4().hex[:8]}"})
        return str(created["list_id"])

    def create_custom_field(self, label: str, kind: str = "string") -> dict[str, Any]:
        """A new custom field (the API's rules: 409 when its name is taken, 100 at most)."""
        created: dict[str, Any] = self.control(
            "POST", "custom_fields", {"label": label, "type": kind}
        )
        return created

    def define_custom_fields(self, *labels: str) -> None:
        """Make sure custom fields with these labels exist (a shared sandbox may have them)."""
        for label in labels:
            try:
                self.create_custom_field(label)
            except ServiceError as exc:
                if ": 409 " not in str(exc):
                    raise

    def members(self, list_id: str) -> list[str]:
        return list(self.control("GET", f"lists/{list_id}/members")["emails"])

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "stats")
        return result

    def imports(self, list_id: str) -> list[dict[str, Any]]:
        """Import bodies accepted for a list: ``digest``, ``list_ids``, activity ``states``."""
        return list(self.control("GET", f"imports?list_id={list_id}")["bodies"])

    def requests(self, key: str) -> dict[str, int]:
        """Status counts for one ``"METHOD /v3/path-template"``."""
        return dict(self.stats()["requests"].get(key, {}))

    def faults(self, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "faults", settings)
        return result

    def settings(self, **values: float) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "settings", values)
        return result

    def unsubscribe(self, emails: Sequence[str]) -> int:
        return int(
            self.control("POST", "contacts/unsubscribe", {"emails": list(emails)})["unsubscribed"]
        )

    def reset_usage(self) -> None:
        self.control("POST", "usage/reset", {})


def sandbox_command(port: int, flags: dict[str, Any]) -> list[str]:
    cmd = [sys.executable, "-m", "sandbox", "--port", str(port)]
    for name, value in flags.items():
        option = "--" + name.replace("_", "-")
        if value is True:
            cmd.append(option)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | tuple):
            cmd += [f"{option}={item}" for item in value]
        else:
            cmd.append(f"{option}={value}")  # "=": a value may start with "-"
    return cmd


@contextmanager
def running_sandbox(**flags: Any) -> Iterator[RunningSandbox]:
    """A sandbox child process for the block; stopped by its PID afterwards."""
    client_id = str(flags.pop("client_id", "ccexport-test-client"))
    client_secret = str(flags.pop("client_secret", secrets.token_urlsafe(16)))
    port = free_port()
    cmd = sandbox_command(port, {"client_id": client_id, "client_secret": client_secret, **flags})
    with running(cmd, port) as pid:
        yield RunningSandbox(port, pid, client_id, client_secret)


def prism_command(port: int, upstream: str) -> list[str]:
    """Prism as a validating proxy: it checks every request and response against
    contract/constant-contact-v3.yaml."""
    exe = ROOT / "node_modules" / ".bin" / "prism"
    if not exe.exists():
        raise ServiceError(f"Prism is not installed ({exe} is missing): run `make install`")
    if not CONTRACT.is_file():
        raise ServiceError(f"the Constant Contact contract is missing: {CONTRACT}")
    spec = str(CONTRACT)
    # -v error: Prism logs every request at info level, which would fill the pipe.
    return [str(exe), "proxy", "-h", "127.0.0.1", "-p", str(port), "-v", "error", spec, upstream]


@contextmanager
def running_prism(upstream: str) -> Iterator[str]:
    """Prism proxying to ``upstream``; yields its base URL.

    ``upstream`` is the sandbox's ``api_base`` (http://127.0.0.1:P/v3) for the API, or
    its ``auth_base`` for the authorization server's ``/token``.
    """
    port = free_port()
    with running(prism_command(port, upstream), port):
        yield f"http://127.0.0.1:{port}"


# Settings a `ccexport` child must not inherit from whoever runs the tests.
_SETTINGS_OF_OTHERS = ("CTCT_", "KEY_VAULT", "AZURE_", "IDENTITY_", "CCEXPORT_", "AzureWebJobs")


def cli_env(sandbox: RunningSandbox, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `ccexport` child: the sandbox's settings and a private home."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(_SETTINGS_OF_OTHERS)
    }
    env.update(sandbox.ctct_settings(), CCEXPORT_HOME=str(home))
    env.update(extra)
    return env
