"""The console's home says what needs attention first: connections that cannot send,
and exports whose last run failed, stopped or waits for a person; then each export
with its last run's status. Through the page's handler, as the host calls it."""

from __future__ import annotations

import os
import re
import time

from functions import http_api
from functions.console import home
from shared.config import Config
from shared.wiring import clients
from tests.support.function_harness import AppEnv, DurableFake
from tests.support.http_calls import (
    DEFINITION,
    EXPORT,
    MARKETING,
    RUN,
    SALES,
    call,
    consent,
    mark_connected,
    put_connection,
)


def text_of(page: str) -> str:
    """The page's words as a person reads them (tags gone, spaces folded)."""
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    return re.sub(r" ([:.,])", r"\1", words)


async def test_failed_runs_and_unready_connections_come_first(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    await mark_connected(app_env)
    await put_connection({"display_name": "Not yet", "roles": ["marketing"]}, name="later")
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write_later(f"{EXPORT}/model.json")
    await call(http_api.export_item, "PUT", "exports/high-value", body=DEFINITION)
    started = await call(
        http_api.export_runs, "POST", "exports/high-value/runs", durable=durable_fake
    )
    run_id = started.headers["Location"].rsplit("/", 1)[1]

    durable_fake.set_status(run_id, "Running", custom_status={"phase": "uploading"})
    page = await call(home.console_home, "GET", "console", headers=MARKETING, durable=durable_fake)
    shown = text_of(page.get_body().decode())
    assert "Connection Not yet: accept the data privacy and compliance terms." in shown
    assert "Export high-value" not in shown.split("Exports", 1)[0]  # a running run needs nobody

    durable_fake.set_status(run_id, "Completed", output={"status": "failed", "run_id": run_id})
    page = await call(home.console_home, "GET", "console", headers=MARKETING, durable=durable_fake)
    body = page.get_body().decode()
    shown = text_of(body)
    assert "Export high-value: its last run failed. Open the run." in shown
    assert f'href="/api/console/runs/{run_id}"' in body
    assert "Failed" in shown.split("Exports", 1)[1]

    theirs = await call(home.console_home, "GET", "console", headers=SALES, durable=durable_fake)
    shown = text_of(theirs.get_body().decode())
    assert "high-value" not in shown  # another role: not their export, nor its run
    assert "Acme" not in shown


async def test_the_home_says_the_keys_requests_today_and_a_used_up_quota(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    """The count every pacer of the key keeps (GET /api/usage's) is on the home page of
    admins and connection users; a quota stop is the first thing that needs attention."""
    await put_connection({"display_name": "Acme", "roles": ["marketing"], **consent()})
    pacer = clients.run_pacer(Config.from_mapping(os.environ))
    for _ in range(3):
        await pacer.wait()
    page = await call(home.console_home, "GET", "console", headers=MARKETING, durable=durable_fake)
    shown = text_of(page.get_body().decode())
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert f"Constant Contact requests today ({day}, UTC): 3 of the daily 10,000, 9,997 left." in (
        shown
    )
    assert "quota is used up" not in shown
    theirs = await call(home.console_home, "GET", "console", headers=SALES, durable=durable_fake)
    assert "Constant Contact requests today" not in text_of(theirs.get_body().decode())
    pacer.stop_for_the_day()
    page = await call(home.console_home, "GET", "console", headers=MARKETING, durable=durable_fake)
    shown = text_of(page.get_body().decode())
    attention = shown.split("Needs attention", 1)[1].split("Exports", 1)[0]
    assert "daily request quota is used up: nothing is sent until 00:00 UTC" in attention
