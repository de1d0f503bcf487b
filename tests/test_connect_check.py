"""`ccexport connect` and `ccexport check` as a user runs them: real processes, the sandbox
over real HTTP, secrets in files under a private CCEXPORT_HOME, a file lock between them."""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.constant_contact.oauth import TokenBundle
from shared.constant_contact.tokens import tokens_secret
from shared.secrets.store import LocalFileSecretStore
from tests.support.ctct_support import ccexport_command, run_cli
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.services import ROOT

Factory = Callable[..., RunningSandbox]
TOKEN_KEY = "POST /oauth2/default/v1/token"


async def stored_bundle(home: Path, connection: str = "default") -> TokenBundle:
    raw = await LocalFileSecretStore(home).get(tokens_secret(connection))
    assert raw is not None
    return TokenBundle.from_json(raw)


async def test_connect_then_check(sandbox: RunningSandbox, tmp_path: Path) -> None:
    env = cli_env(sandbox, tmp_path)
    connected = run_cli(["connect", "--port", "0"], env)
    assert connected.returncode == 0, connected.stderr
    assert connected.stdout.startswith(
        "connected 'default' (scope contact_data account_read offline_access;"
    )
    assert "Authorize ccexport for connection 'default' at:" in connected.stderr
    bundle = await stored_bundle(tmp_path)
    secret_file = LocalFileSecretStore(tmp_path).path_of(tokens_secret("default"))
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    for output in (connected.stdout, connected.stderr):
        assert bundle.access_token not in output
        assert str(bundle.refresh_token) not in output
        assert sandbox.client_secret not in output

    list_id = sandbox.create_list("Newsletter")
    checked = run_cli(["check", "--list-id", list_id, "--json"], env)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] is True
    assert report["list"] == {"list_id": list_id, "name": "Newsletter", "membership_count": None}
    assert report["token"]["source"] == "store"
    assert bundle.access_token not in checked.stdout

    plain = run_cli(["check", "--list-id", list_id], env)
    assert plain.returncode == 0
    assert plain.stdout.startswith("ok: connection 'default' has a valid access token")
    # Each check's requests are counted where the key's day is, as runs' are.
    sent = sum(sum(codes.values()) for codes in sandbox.stats()["requests"].values())
    usage = json.loads(run_cli(["usage", "--json"], env).stdout)
    assert 2 <= usage["used"] <= sent


async def test_check_fails_with_one_line_reasons(sandbox: RunningSandbox, tmp_path: Path) -> None:
    env = cli_env(sandbox, tmp_path)
    assert run_cli(["connect", "--port", "0", "--name", "acme"], env).returncode == 0
    missing = "0b7f6d7e-1c1a-4d5e-9a5b-000000000404"
    gone = run_cli(["check", "--list-id", missing, "--name", "acme", "--json"], env)
    assert gone.returncode == 2
    assert gone.stderr.strip().splitlines() == [
        f"ccexport: error: list {missing} does not exist in the account of connection 'acme'"
    ]
    assert json.loads(gone.stdout)["ok"] is False

    unknown = run_cli(["check", "--list-id", missing, "--name", "nobody"], env)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "ccexport: error: connection 'nobody' needs to be reconnected: no tokens are stored "
        "for it (run `ccexport connect --connection nobody`)"
    ]
    bad_id = run_cli(["check", "--list-id", "tab\tin-name", "--name", "acme"], env)
    assert bad_id.returncode == 2
    assert "is neither a list id (a UUID) nor a list name" in bad_id.stderr


def test_connect_with_a_wrong_client_secret_says_so(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    env = cli_env(sandbox, tmp_path, CTCT_CLIENT_SECRET="wrong-secret")
    failed = run_cli(["connect", "--port", "0"], env)
    assert failed.returncode == 2
    assert "refused the client credentials" in failed.stderr
    assert "wrong-secret" not in failed.stderr
    assert not (tmp_path / "secrets" / f"{tokens_secret('default')}.json").exists()


def checks_at_once(count: int, list_id: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """Start ``count`` `ccexport check --json` processes at once; all must exit 0."""
    procs = [
        subprocess.Popen(
            ccexport_command("check", "--list-id", list_id, "--json"),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results: list[tuple[int, str, str]] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:  # only if communicate timed out: stop ours, by PID
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failures = [(code, err) for code, _out, err in results if code != 0]
    assert failures == []
    return [json.loads(out) for _code, out, _err in results]


async def test_processes_that_waited_reuse_the_one_refresh(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    """Stored token expired, new tokens long-lived: exactly one process refreshes."""
    sandbox = sandbox_factory(rotating_refresh_tokens=True)
    env = cli_env(sandbox, tmp_path)
    assert run_cli(["connect", "--port", "0"], env).returncode == 0
    list_id = sandbox.create_list()
    store = LocalFileSecretStore(tmp_path)
    old = await stored_bundle(tmp_path)
    # expired, but still saying when its token request was made: the refresh must keep
    # the token endpoint's 1 request/s from the connect's own request
    expired = dataclasses.replace(old, expires_at=time.time() - 1)
    await store.set(tokens_secret("default"), expired.to_json())

    reports = checks_at_once(4, list_id, env)
    sources = sorted(r["token"]["source"] for r in reports)
    assert sources == ["refresh"] + ["store"] * 3
    stats = sandbox.stats()
    assert stats["requests"][TOKEN_KEY] == {"200": 2}  # the connect, and one refresh
    assert stats["invalid_grant"] == 0
    assert (await stored_bundle(tmp_path)).refresh_token != old.refresh_token


def test_24_checks_after_expiry_all_succeed_without_invalid_grant(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    """The issue's acceptance test, against the sandbox's real limits (4/s, tokens 1/s).

    Access tokens live 1 s, so the 24 requests (at least 6 s at 4/s) need several
    tokens. What the design guarantees: refreshes never overlap (the file lock), so
    no refresh token is spent twice (invalid_grant 0); a waiting process re-reads the
    store and uses a token another stored; and a refresh waits until 1.1 s after the
    previous token request recorded in the store: at most one a second, never one
    per process.
    """
    sandbox = sandbox_factory(rotating_refresh_tokens=True, access_token_ttl=1)
    env = cli_env(sandbox, tmp_path)
    assert run_cli(["connect", "--port", "0"], env).returncode == 0
    list_id = sandbox.create_list()
    time.sleep(1.2)  # the access token has expired
    exchanged = sandbox.requests(TOKEN_KEY).get("200", 0)
    assert exchanged == 1

    started = time.monotonic()
    reports = checks_at_once(24, list_id, env)
    elapsed = time.monotonic() - started
    stats = sandbox.stats()
    refreshes = stats["requests"][TOKEN_KEY]["200"] - exchanged
    assert stats["invalid_grant"] == 0
    assert refreshes >= 1
    # Every refresh was made by exactly one process; everyone else reused a stored token.
    assert sum(r["token"]["refreshed_here"] for r in reports) == refreshes
    # Token requests are spaced by the last one's time in the store (the 1/s limit).
    assert refreshes <= 1 + elapsed / 1.1
    print(
        f"\n24 checks: {elapsed:.1f}s, {refreshes} refreshes, "
        f"{stats['throttled']} throttled answers, invalid_grant {stats['invalid_grant']}"
    )


def test_run_sends_with_the_definitions_connection_unless_told_another(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    env = cli_env(sandbox, tmp_path / "home")
    assert run_cli(["connect", "--connection", "acme"], env).returncode == 0
    (tmp_path / "seg.csv").write_text("PrimaryEmail\nann@example.com\n")
    definition = {
        "name": "x",
        "connection": "acme",
        "list_ids": [sandbox.create_list()],
        "mapping": {"email": "PrimaryEmail"},
    }
    (tmp_path / "def.json").write_text(json.dumps(definition))
    args = ["run", str(tmp_path / "seg.csv"), "--config", str(tmp_path / "def.json"), "--json"]
    sent = run_cli(args, env)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["connection"] == "acme"
    other = run_cli([*args, "--connection", "other"], env)
    assert other.returncode == 1
    assert other.stderr.startswith("ccexport: error: connection 'other' needs to be reconnected")
