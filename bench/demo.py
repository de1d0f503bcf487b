"""`make run`: the whole export on this machine, from a dropped segment to a filled list.

1. starts Azurite (Blob Storage) and the Constant Contact sandbox on 127.0.0.1, each a
   child process stopped by its PID when the demo ends, however it ends;
2. writes a Customer Insights export (100,000 profiles in two CSV parts and
   model.json, a few broken addresses and duplicates) into Azurite's ``inbox``;
3. connects the sandbox account with ``ccexport connect`` (OAuth with PKCE; tokens in
   a temporary CCEXPORT_HOME), and makes a list in it;
4. runs ``ccexport run az://inbox/...`` end to end: the progress bar, then the report;
5. shows what the list now holds.

    .venv/bin/python -m bench.demo [--rows N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from bench.sample import EXPORT, RUN, TABLE, write_sample
from tests.support.sandbox_service import cli_env, running_sandbox
from tests.support.services import (
    ROOT,
    ServiceError,
    azurite_command,
    azurite_connection_string,
    free_port,
    running,
)

MAPS = (
    "email=PrimaryEmail", "first_name=FirstName", "last_name=LastName", "city=City",
    "zip=PostalCode", "phone=PrimaryPhone",
)  # fmt: skip
SHOWN_MEMBERS = 5


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def ccexport(args: list[str], env: dict[str, str]) -> int:
    """Run the real command, on this terminal (its progress bar and report show here)."""
    return subprocess.call(
        [sys.executable, "-m", "shared.workstation.cli", *args], cwd=ROOT, env=env
    )


def upload_sample(conn: str, folder: Path) -> str:
    service = BlobServiceClient.from_connection_string(conn)
    inbox = service.get_container_client("inbox")
    inbox.create_container()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "export.json":
            with path.open("rb") as data:
                inbox.upload_blob(path.relative_to(folder).as_posix(), data, overwrite=True)
    return f"az://inbox/{EXPORT}/{TABLE}/{RUN}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ccexport-demo-")))
        say("starting Azurite (Blob Storage) and the Constant Contact sandbox on 127.0.0.1")
        port = free_port()
        azurite_pid = stack.enter_context(running(azurite_command(port), port, cwd=work))
        conn = azurite_connection_string(port)
        sandbox = stack.enter_context(running_sandbox(client_id="ccexport-demo"))
        print(f"Azurite pid {azurite_pid} on port {port}; sandbox pid {sandbox.pid} at "
              f"{sandbox.base_url} (4 requests/s, 10,000 a day, as the real service)")  # fmt: skip

        say(f"writing a Customer Insights export of {args.rows:,} profiles into az://inbox")
        counts = write_sample(work / "sample", args.rows, bad_every=997, duplicate_every=1009)
        source = upload_sample(conn, work / "sample")
        print(f"{source} (2 CSV parts, model.json): {counts.bad} broken addresses, "
              f"{counts.duplicates} duplicates")  # fmt: skip

        env = cli_env(sandbox, work / "home", CCEXPORT_STORAGE_CONNECTION_STRING=conn)
        say("connecting the sandbox account: ccexport connect")
        if ccexport(["connect", "--auto", "--port", "0"], env) != 0:
            return 1
        list_id = sandbox.create_list("High value customers")
        print(f"list 'High value customers': {list_id}")

        say(f"ccexport run {source} --list-id {list_id} " + " ".join(f"--map {m}" for m in MAPS))
        maps = [arg for pair in MAPS for arg in ("--map", pair)]
        code = ccexport(["run", source, "--list-id", list_id, *maps], env)

        say("what the list holds now")
        members = sandbox.members(list_id)
        print(f"{len(members):,} members (expected {counts.contacts:,}), for example:")
        for email in sorted(members)[:SHOWN_MEMBERS]:
            print(f"  {masked(email)}")
        say("stopping Azurite and the sandbox")
    return code


def masked(email: str) -> str:
    """Addresses are personal data even in a demo: show their shape, not the person."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ServiceError as exc:
        raise SystemExit(f"demo: {exc}") from None
