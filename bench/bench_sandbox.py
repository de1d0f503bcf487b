"""Benchmark: import 1,000,000 contacts into the Constant Contact sandbox over HTTP.

Starts ``python -m sandbox`` on a free 127.0.0.1 port without rate limits, generates
1M contacts in process as JSON bodies just under 4 MB (~50 bodies, the way the
product chunks them), sends them with a few requests in flight, waits until every
import activity has completed, and prints wall time, contacts/s and the sandbox's RSS.
Measured, not asserted; the sandbox is stopped by its PID at the end.

    .venv/bin/python -m bench.bench_sandbox [--contacts N] [--in-flight K]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import psutil  # type: ignore[import-untyped]  # no stubs pinned

ROOT = Path(__file__).resolve().parent.parent
BODY_CAP = 3_900_000  # bytes per request, under the 4,000,000 the sandbox keeps
FIRST = ("José", "Zoë", "Anaïs", "Björn", "Mary", "Wei", "Olu", "Priya")
LAST = ("García", "Nguyen", "Smith", "Müller", "Okafor", "Kowalski", "Haddad", "Tanaka")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bodies(count: int, list_id: str) -> list[bytes]:
    """Import bodies of 8-field contacts (~200 bytes each), cut by serialized size."""
    head = b'{"list_ids":["' + list_id.encode() + b'"],"import_data":['
    result: list[bytes] = []
    parts: list[bytes] = []
    size = len(head) + 2
    for i in range(count):
        contact = orjson.dumps(
            {
                "email": f"person{i}@example.com",
                "first_name": FIRST[i % 8],
                "last_name": LAST[i % 7],
                "phone": f"555-{i % 10000:04d}",
                "street": f"{i % 997} Main Street",
                "city": "Springfield",
                "state": "MA",
                "zip": f"{i % 100000:05d}",
            }
        )
        if size + len(contact) + 1 > BODY_CAP:
            result.append(head + b",".join(parts) + b"]}")
            parts, size = [], len(head) + 2
        parts.append(contact)
        size += len(contact) + 1
    if parts:
        result.append(head + b",".join(parts) + b"]}")
    return result


def peak_rss(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of a process, in bytes, where /proc has it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def run(count: int, in_flight: int, base: str, token: str, list_id: str) -> dict[str, float]:
    generated = time.perf_counter()
    payloads = bodies(count, list_id)
    generation = time.perf_counter() - generated
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    activity_ids: list[str] = []
    gate = asyncio.Semaphore(in_flight)
    async with aiohttp.ClientSession(base_url=base + "/", headers=headers) as session:

        async def send(body: bytes) -> None:
            async with (
                gate,
                session.post("v3/activities/contacts_json_import", data=body) as response,
            ):
                document = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"import refused: {response.status} {document}")
                activity_ids.append(document["activity_id"])

        started = time.perf_counter()
        await asyncio.gather(*(send(body) for body in payloads))
        sent = time.perf_counter() - started
        imported = 0
        for activity_id in activity_ids:
            while True:
                async with session.get(f"v3/activities/{activity_id}") as response:
                    document = await response.json()
                if document["state"] == "completed":
                    imported += document["status"]["person_count"]
                    break
                if document["state"] in {"failed", "timed_out", "cancelled"}:
                    raise RuntimeError(f"import {activity_id} ended {document['state']}")
                await asyncio.sleep(0.05)
        done = time.perf_counter() - started
        async with session.get(
            f"v3/contact_lists/{list_id}?include_membership_count=all"
        ) as response:
            members = (await response.json())["membership_count"]
    return {
        "generation_s": generation,
        "requests": len(payloads),
        "mean_body_mb": sum(len(b) for b in payloads) / len(payloads) / 1e6,
        "send_s": sent,
        "wall_s": done,
        "imported": imported,
        "members": members,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--in-flight", type=int, default=2)
    args, _unknown = parser.parse_known_args(argv)  # bench.run passes its own flags to all
    port = free_port()
    cmd = [
        sys.executable, "-m", "sandbox", f"--port={port}", "--rate-limit=0", "--daily-quota=0",
        "--token-rate-limit=0", "--activity-delay=0", "--import-rate=100000000",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().decode()
        if "listening" not in ready:
            print(f"sandbox did not start: {ready}{proc.stdout.read().decode()[-2000:]}")
            return 1
        base = f"http://127.0.0.1:{port}"
        control = {"Content-Type": "application/json"}

        async def prepare() -> tuple[str, str]:
            async with aiohttp.ClientSession(base_url=base + "/", headers=control) as session:
                async with session.post("__sandbox/tokens", data=b"{}") as response:
                    token = (await response.json())["access_token"]
                async with session.post("__sandbox/lists", data=b'{"name": "bench"}') as response:
                    list_id = (await response.json())["list_id"]
            return token, list_id

        token, list_id = asyncio.run(prepare())
        idle_rss = psutil.Process(proc.pid).memory_info().rss
        figures = asyncio.run(run(args.contacts, args.in_flight, base, token, list_id))
        rss = psutil.Process(proc.pid).memory_info().rss
        peak = peak_rss(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    imported, members = figures["imported"], figures["members"]
    lines = [
        f"contacts                {args.contacts:,} ({imported:,} imported, {members:,} listed)",
        f"requests                {figures['requests']:.0f} bodies, mean "
        f"{figures['mean_body_mb']:.2f} MB, {args.in_flight} in flight",
        f"generate bodies         {figures['generation_s']:.2f} s (client side, not in wall)",
        f"send all imports        {figures['send_s']:.2f} s",
        f"wall (send + complete)  {figures['wall_s']:.2f} s",
        f"throughput              {imported / figures['wall_s']:,.0f} contacts/s",
        f"sandbox RSS             {idle_rss / 2**20:.0f} MB idle, {rss / 2**20:.0f} MB after"
        + (f", peak {peak / 2**20:.0f} MB" if peak else ""),
    ]
    print("\n".join(lines))
    ok = figures["imported"] == args.contacts == figures["members"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
