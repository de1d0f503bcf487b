"""The HTTP API's part of mirror mode and incremental runs: the definition's ``mode``
and ``max_removal_share``, and a run request's ``full`` and ``confirm_removals``."""

from __future__ import annotations

import pytest

from functions import http_api
from shared.runs.contract import RunInput
from tests.support.function_harness import AppEnv, DurableFake, response_json
from tests.support.http_calls import (
    DEFINITION,
    EXPORT,
    RUN,
    call,
    consent,
    mark_connected,
    put_connection,
)

pytestmark = pytest.mark.azurite


async def test_a_mirror_definition_and_run_flags(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    await put_connection({"display_name": "Acme", **consent()})
    await mark_connected(app_env)
    app_env.write(f"{RUN}/HighValue_1.csv")
    app_env.write_later(f"{EXPORT}/model.json")
    put, runs = http_api.export_item, http_api.export_runs
    mirror = {**DEFINITION, "mode": "mirror", "max_removal_share": 0.05}

    bad = await call(put, "PUT", "exports/high-value", body={**mirror, "mode": "sync"})
    assert bad.status_code == 400
    assert "mirror" in response_json(bad)["error"]
    too_much = await call(put, "PUT", "exports/high-value", body={**mirror, "max_removal_share": 2})
    assert too_much.status_code == 400
    saved = await call(put, "PUT", "exports/high-value", body=mirror)
    assert saved.status_code == 201
    shown = response_json(await call(put, "GET", "exports/high-value"))
    assert (shown["mode"], shown["max_removal_share"]) == ("mirror", 0.05)

    wrong = await call(
        runs, "POST", "exports/high-value/runs", durable=durable_fake, body={"full": "yes"}
    )
    assert wrong.status_code == 400
    full = await call(
        runs, "POST", "exports/high-value/runs", durable=durable_fake, body={"full": True}
    )
    assert full.status_code == 202
    [first] = durable_fake.starts
    started = RunInput.from_json(first.input)
    assert started.options.full is True
    assert started.options.confirm_removals is False
    assert started.definition().mode == "mirror"

    # The run stopped for confirmation (it is done): confirming starts it again, same id.
    durable_fake.set_status(first.instance_id, "Completed", output={"status": "needs_confirmation"})
    confirmed = await call(
        runs,
        "POST",
        "exports/high-value/runs",
        durable=durable_fake,
        body={"confirm_removals": True},
    )
    assert confirmed.status_code == 202
    second = durable_fake.starts[-1]
    assert second.instance_id == first.instance_id
    assert RunInput.from_json(second.input).options.confirm_removals is True
