"""Start and stop the local stand-ins the tests need, by PID.

Every service is a child process bound to 127.0.0.1 on a free port; it is stopped
with SIGTERM (then SIGKILL) on its own PID, never by name.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The well-known development account of Azurite (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class ServiceError(RuntimeError):
    """A local stand-in could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Block until 127.0.0.1:port accepts connections, or fail with the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise ServiceError(f"service exited with {proc.returncode}: {out[-2000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one child by its PID: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout:
        proc.stdout.close()


@contextmanager
def running(
    cmd: Sequence[str], port: int, *, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> Iterator[int]:
    """Run cmd (which must listen on port) for the duration of the block; yield its PID."""
    proc = subprocess.Popen(  # fixed commands from this repository
        list(cmd),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_for_port(port, proc)
        yield proc.pid
    finally:
        stop(proc)


def azurite_command(port: int) -> list[str]:
    """The Azurite blob service from this repository's node_modules, in memory, on loopback."""
    exe = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not exe.exists():
        raise ServiceError(f"Azurite is not installed ({exe} is missing): run `make install`")
    return [
        str(exe),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--silent",
        "--extentMemoryLimit", "1024",
    ]  # fmt: skip


def azurite_connection_string(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )
