"""A local HTTPS server that speaks the Key Vault secrets protocol, for the real SDK.

No Key Vault emulator can be installed offline, so the tests run the real
`azure-keyvault-secrets` client against this fake: challenge authentication, versions,
paging by `nextLink`, soft delete, purge and recovery, and the App Service
managed-identity endpoint that `ManagedIdentityCredential` and `DefaultAzureCredential`
use. It also injects faults (5xx, 429 with Retry-After) for retry and chaos tests.

It runs in a background thread with its own event loop, on 127.0.0.1 only, with a
CA and a leaf certificate generated per run. Faults and state are set from the test
thread; a lock guards them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TENANT = "00000000-0000-4000-8000-00000000cafe"
VAULT_RESOURCE = "https://vault.azure.net"
IDENTITY_HEADER = "local-identity-header"
_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_API_VERSION = re.compile(r"^(\d+\.\d+|\d{4}-\d{2}-\d{2}(-preview)?)$")
_PAGE_MAX = 25  # Key Vault's own cap on maxresults

# Variables that would send DefaultAzureCredential to a real identity provider: a test
# that points managed identity at the fake (identity_env) removes them all first.
CLOUD_IDENTITY_VARS = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
)


# --- certificates ------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a leaf for 127.0.0.1/localhost; return (ca, leaf cert, leaf key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccexport test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    cert_path = directory / "leaf.pem"
    key_path = directory / "leaf.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


# --- the stub credential -----------------------------------------------------------


class StubCredential:
    """An async token credential whose token the fake accepts; counts its calls."""

    def __init__(self, token: str) -> None:
        self._token = token
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.calls.append((scopes, tenant_id))
        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StubCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        return None


# --- state -------------------------------------------------------------------------


@dataclass
class _Version:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str]
    enabled: bool
    created: int
    updated: int


@dataclass
class _Secret:
    name: str  # as first created; Key Vault names are case-insensitive
    versions: list[_Version] = field(default_factory=list)
    deleted_at: int | None = None


@dataclass
class Fault:
    """The next `remaining` requests to `target` answer `status` instead of being served."""

    status: int
    remaining: int
    target: str = "vault"  # "vault" or "identity"
    retry_after: float | None = None
    method: str | None = None


@dataclass(frozen=True)
class SeenRequest:
    """What the fake saw: enough to assert on traffic, never a body or a token."""

    target: str
    method: str
    path: str
    query: dict[str, str]
    authorized: bool


def _error(status: int, code: str, message: str, *, inner: str | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if inner:
        body["innererror"] = {"code": inner}
    return web.json_response({"error": body}, status=status)


class KeyVaultFake:
    """The fake vault plus a managed-identity endpoint; start() once, stop() at the end."""

    def __init__(self, workdir: Path, *, identity_header: str = IDENTITY_HEADER) -> None:
        self.ca_path, self._cert_path, self._key_path = make_certificates(workdir / "tls")
        self.identity_header = identity_header
        self._lock = threading.Lock()
        self._secrets: dict[str, _Secret] = {}
        self._faults: list[Fault] = []
        self._tokens: set[str] = set()
        self.requests: list[SeenRequest] = []
        self.identity_tokens_issued = 0
        self.faults_fired = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self.port = 0
        self.identity_port = 0

    # -- lifecycle --

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def identity_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.identity_port}/msi/token"

    def identity_env(self) -> dict[str, str]:
        """The App Service managed-identity variables that point at this fake."""
        return {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
        }

    def start(self) -> None:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="keyvault-fake", daemon=True)
        self._thread.start()
        if not started.wait(timeout=10):
            raise RuntimeError("the Key Vault fake did not start within 10 s")
        if errors:
            raise RuntimeError(f"the Key Vault fake failed to start: {errors[0]!r}")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _serve(self) -> None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(self._cert_path, self._key_path)
        vault = web.Application(middlewares=[self._vault_middleware], client_max_size=1 << 20)
        vault.router.add_route("PUT", "/secrets/{name}", self._set)
        vault.router.add_route("DELETE", "/secrets/{name}", self._delete)
        vault.router.add_route("GET", "/secrets", self._list_secrets)
        vault.router.add_route("GET", "/secrets/{name}/versions", self._list_versions)
        vault.router.add_route("GET", "/secrets/{name}/{version:[^/]*}", self._get)
        vault.router.add_route("PATCH", "/secrets/{name}/{version:[^/]*}", self._update)
        vault.router.add_route("GET", "/deletedsecrets/{name}", self._get_deleted)
        vault.router.add_route("DELETE", "/deletedsecrets/{name}", self._purge)
        vault.router.add_route("POST", "/deletedsecrets/{name}/recover", self._recover)
        identity = web.Application(middlewares=[self._identity_middleware])
        identity.router.add_route("GET", "/msi/token", self._identity_token)
        for app, context in ((vault, tls), (identity, None)):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            self._runners.append(runner)
        self.port = self._bound_port(self._runners[0])
        self.identity_port = self._bound_port(self._runners[1])

    @staticmethod
    def _bound_port(runner: web.AppRunner) -> int:
        port: int = runner.addresses[0][1]
        return port

    async def _shutdown(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    # -- controls for tests (called from the test thread) --

    def credential(self) -> StubCredential:
        """A stub credential whose token this vault accepts."""
        token = "stub-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return StubCredential(token)

    def fail_next(
        self,
        count: int,
        status: int = 503,
        *,
        retry_after: float | None = None,
        target: str = "vault",
        method: str | None = None,
    ) -> None:
        """Answer the next `count` requests (optionally only of one method) with `status`."""
        with self._lock:
            self._faults.append(Fault(status, count, target, retry_after, method))

    def reset(self) -> None:
        """Forget all secrets, faults and seen requests (issued tokens stay valid)."""
        with self._lock:
            self._secrets.clear()
            self._faults.clear()
            self.requests.clear()
            self.identity_tokens_issued = 0

    def stored_values(self) -> list[str]:
        """Every value stored in any version: lets a test prove it never leaked elsewhere."""
        with self._lock:
            return [v.value for s in self._secrets.values() for v in s.versions]

    def accepted_tokens(self) -> list[str]:
        """Every access token the vault accepts (stub and managed-identity issued)."""
        with self._lock:
            return sorted(self._tokens)

    def version_count(self, name: str) -> int:
        with self._lock:
            secret = self._secrets.get(name.lower())
            return len(secret.versions) if secret else 0

    # -- middleware --

    def _take_fault(self, target: str, method: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.target == target and fault.remaining > 0:
                    if fault.method is not None and fault.method != method:
                        continue
                    fault.remaining -= 1
                    self.faults_fired += 1
                    return fault
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        codes = {403: "Forbidden", 429: "Throttled", 500: "InternalServerError"}
        code = codes.get(fault.status, "ServiceUnavailable")
        response = _error(fault.status, code, "injected fault")
        if fault.retry_after is not None:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response

    @web.middleware
    async def _vault_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        with self._lock:
            authorized = token in self._tokens
            self.requests.append(
                SeenRequest("vault", request.method, request.path, dict(request.query), authorized)
            )
        fault = self._take_fault("vault", request.method)
        if fault is not None:
            return self._fault_response(fault)
        if not authorized:
            # Like Key Vault: challenge before reading the body (the SDK's probe has none).
            response = _error(401, "Unauthorized", "AKV10000: Request is missing a Bearer token.")
            response.headers["WWW-Authenticate"] = (
                f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                f'resource="{VAULT_RESOURCE}"'
            )
            return response
        if not _API_VERSION.match(request.query.get("api-version", "")):
            return _error(400, "BadParameter", "The api-version parameter is missing or invalid.")
        name = request.match_info.get("name")
        if name is not None and not _NAME.match(name):
            return _error(400, "BadParameter", "The secret name is invalid.")
        return await handler(request)

    @web.middleware
    async def _identity_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        with self._lock:
            self.requests.append(
                SeenRequest("identity", request.method, request.path, dict(request.query), False)
            )
        fault = self._take_fault("identity", request.method)
        if fault is not None:
            return self._fault_response(fault)
        return await handler(request)

    # -- bundles --

    def _id(self, name: str, version: str | None = None) -> str:
        return f"{self.url}/secrets/{name}" + (f"/{version}" if version is not None else "")

    def _item(self, secret: _Secret, version: _Version, *, with_version: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self._id(secret.name, version.version if with_version else None),
            "attributes": {
                "enabled": version.enabled,
                "created": version.created,
                "updated": version.updated,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": dict(version.tags),
        }
        if version.content_type is not None:
            item["contentType"] = version.content_type
        return item

    def _bundle(self, secret: _Secret, version: _Version) -> dict[str, Any]:
        return {**self._item(secret, version, with_version=True), "value": version.value}

    def _deleted_bundle(self, secret: _Secret) -> dict[str, Any]:
        assert secret.deleted_at is not None
        return {
            **self._item(secret, secret.versions[-1], with_version=True),
            "recoveryId": f"{self.url}/deletedsecrets/{secret.name}",
            "deletedDate": secret.deleted_at,
            "scheduledPurgeDate": secret.deleted_at + 90 * 86400,
        }

    def _live(self, name: str) -> _Secret | None:
        secret = self._secrets.get(name.lower())
        return secret if secret is not None and secret.deleted_at is None else None

    @staticmethod
    def _not_found(name: str) -> web.Response:
        return _error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found.")

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        try:
            size = min(int(request.query.get("maxresults", _PAGE_MAX)), _PAGE_MAX)
            token = request.query.get("$skiptoken")
            start = int(base64.urlsafe_b64decode(token).decode()) if token else 0
        except ValueError:
            return _error(400, "BadParameter", "Bad paging parameters.")
        if size < 1:
            return _error(400, "BadParameter", "maxresults must be at least 1.")
        page = items[start : start + size]
        next_link = None
        if start + size < len(items):
            skip = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            next_link = (
                f"{self.url}{request.path}?api-version={request.query['api-version']}"
                f"&$skiptoken={skip}&maxresults={size}"
            )
        return web.json_response({"value": page, "nextLink": next_link})

    # -- handlers --

    async def _set(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, str):
            return _error(400, "BadParameter", "Property value is required.")
        now = int(time.time())
        with self._lock:
            secret = self._secrets.get(name.lower())
            if secret is not None and secret.deleted_at is not None:
                return _error(
                    409,
                    "Conflict",
                    f"Secret {name} is currently in a deleted but recoverable state, and its "
                    "name cannot be reused; in this state, the secret can be recovered or purged.",
                    inner="ObjectIsDeletedButRecoverable",
                )
            if secret is None:
                secret = self._secrets[name.lower()] = _Secret(name)
            attributes = body.get("attributes") or {}
            version = _Version(
                version=uuid.uuid4().hex,
                value=value,
                content_type=body.get("contentType"),
                tags=dict(body.get("tags") or {}),
                enabled=bool(attributes.get("enabled", True)),
                created=now,
                updated=now,
            )
            secret.versions.append(version)
            return web.json_response(self._bundle(secret, version))

    async def _get(self, request: web.Request) -> web.Response:
        name, wanted = request.match_info["name"], request.match_info["version"]
        with self._lock:
            secret = self._live(name)
            if secret is None:
                return self._not_found(name)
            if not wanted:
                version = secret.versions[-1]
            else:
                found = [v for v in secret.versions if v.version == wanted]
                if not found:
                    return self._not_found(name)
                version = found[0]
            if not version.enabled:
                return _error(
                    403, "Forbidden", "Operation get is not allowed on a disabled secret."
                )
            return web.json_response(self._bundle(secret, version))

    async def _update(self, request: web.Request) -> web.Response:
        name, wanted = request.match_info["name"], request.match_info["version"]
        body = await request.json()
        with self._lock:
            secret = self._live(name)
            versions = secret.versions if secret else []
            found = [v for v in versions if v.version == wanted] if wanted else versions[-1:]
            if secret is None or not found:
                return self._not_found(name)
            version = found[0]
            attributes = body.get("attributes") or {}
            if "enabled" in attributes:
                version.enabled = bool(attributes["enabled"])
            if "tags" in body:
                version.tags = dict(body["tags"] or {})
            if "contentType" in body:
                version.content_type = body["contentType"]
            version.updated = int(time.time())
            return web.json_response(self._item(secret, version, with_version=True))

    async def _list_versions(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            secret = self._live(name)
            items = (
                [self._item(secret, v, with_version=True) for v in secret.versions]
                if secret
                else []
            )
        return self._page(request, items)

    async def _list_secrets(self, request: web.Request) -> web.Response:
        with self._lock:
            items = [
                self._item(s, s.versions[-1], with_version=False)
                for s in self._secrets.values()
                if s.deleted_at is None
            ]
        return self._page(request, items)

    async def _delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            secret = self._live(name)
            if secret is None:
                return self._not_found(name)
            secret.deleted_at = int(time.time())
            return web.json_response(self._deleted_bundle(secret))

    async def _get_deleted(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            secret = self._secrets.get(name.lower())
            if secret is None or secret.deleted_at is None:
                return _error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            return web.json_response(self._deleted_bundle(secret))

    async def _purge(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            secret = self._secrets.get(name.lower())
            if secret is None or secret.deleted_at is None:
                return _error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            del self._secrets[name.lower()]
        return web.Response(status=204)

    async def _recover(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            secret = self._secrets.get(name.lower())
            if secret is None or secret.deleted_at is None:
                return _error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            secret.deleted_at = None
            return web.json_response(self._item(secret, secret.versions[-1], with_version=True))

    async def _identity_token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            return web.json_response({"error": "invalid identity header"}, status=401)
        if request.query.get("api-version") != "2019-08-01":
            return web.json_response({"error": "unsupported api-version"}, status=400)
        resource = request.query.get("resource", "")
        if resource.rstrip("/") != VAULT_RESOURCE:
            return web.json_response({"error": f"unknown resource {resource}"}, status=400)
        token = "msi-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
            self.identity_tokens_issued += 1
        return web.json_response(
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": request.query.get("client_id", "system-assigned"),
            }
        )
