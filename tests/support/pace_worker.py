"""One process that sends paced requests to the sandbox through a pacer whose record is a
blob, as one instance of the function app does: the shared pacer's tests start several.

    python -m tests.support.pace_worker SETTINGS_JSON

SETTINGS_JSON: ``connection_string``, ``container``, ``blob``, ``api_base``, ``token``,
``list_id``, ``requests``, ``rate``, ``ahead`` (null: without bound), ``late_after``
(null: however late), ``concurrency``.
It prints one line ``ready`` once its pacer is open, then one ``sent <wall time>`` line
per request as it starts, and at the end one JSON line with its figures.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson
from azure.storage.blob import ContainerClient

from shared.constant_contact.client import ConstantContactClient
from shared.constant_contact.pacing import Pacer
from shared.storage.records import BlobRecord


async def main(settings: dict[str, Any]) -> dict[str, Any]:
    container = ContainerClient.from_connection_string(
        settings["connection_string"], settings["container"]
    )
    record = BlobRecord(container, settings["blob"])
    pacer = Pacer(
        settings["rate"],
        record=record,
        ahead=settings["ahead"],
        late_after=settings["late_after"],
        key="worker",
    )
    left = settings["requests"]
    began = time.time()
    print("ready", flush=True)

    async def token(_refresh: bool) -> str:
        return str(settings["token"])

    paced = pacer.wait

    async def wait_then_stamp() -> None:
        await paced()
        print(f"sent {time.time():.6f}", flush=True)  # the pacer let it go

    pacer.wait = wait_then_stamp  # type: ignore[method-assign]

    async def sender(client: ConstantContactClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await client.get_list(settings["list_id"])

    async with ConstantContactClient(settings["api_base"], token, pacer) as client:
        await asyncio.gather(*(sender(client) for _ in range(settings["concurrency"])))
        stats = client.stats
    return {
        "requests": stats.requests,
        "throttled": stats.throttled,
        "seconds": time.time() - began,
        "waits": pacer.waits,
        "missed": pacer.missed,
        "reads": record.reads,
        "writes": record.writes,
        "conflicts": record.conflicts,
    }


if __name__ == "__main__":
    figures = asyncio.run(main(orjson.loads(sys.argv[1])))
    print(orjson.dumps(figures).decode(), flush=True)
