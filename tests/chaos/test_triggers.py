"""The same blob event delivered five times at once starts one run.

tests/test_triggers.py delivers it five times one after the other (and checks that a
finished run is not started again while a failed one is). Here the deliveries arrive
together, as Event Grid's at-least-once delivery and a scaled-out function app allow:
every one of them finds no run, one starts it, and the Durable host refuses the
others (host.json sets ``overridableExistingInstanceStates: NonRunningStates``; the
Durable fake does the same). None of the deliveries may fail for it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.figures import FIGURES
from tests.support.function_harness import AppEnv, DurableFake
from tests.support.trigger_calls import MODEL, RUN, blob_event, seed

pytestmark = pytest.mark.azurite

DELIVERIES = 5


async def test_five_deliveries_at_once_start_one_run(
    app_env: AppEnv, durable_fake: DurableFake
) -> None:
    durable_fake.refuse_running = True
    durable_fake.status_barrier = DELIVERIES  # every delivery looks before any starts
    await seed(app_env)
    app_env.write(f"{RUN}/HighValue_1.csv", b"id1,a@example.com\n")
    app_env.write(f"{RUN}/HighValue_2.csv", b"id2,b@example.com\n")
    app_env.write_later(MODEL)

    results = await asyncio.gather(
        *(blob_event(app_env, durable_fake, MODEL) for _ in range(DELIVERIES)),
        return_exceptions=True,
    )
    FIGURES.trigger_deliveries += DELIVERIES

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len(durable_fake.starts) == 1
    FIGURES.trigger_runs_started += len(durable_fake.starts)
    assert len(durable_fake.refused) == DELIVERIES - 1  # they did race: the host refused 4
    # and once more, with the part files' own events mixed in, while the run is running
    again = await asyncio.gather(
        *(blob_event(app_env, durable_fake, MODEL) for _ in range(DELIVERIES)),
        blob_event(app_env, durable_fake, f"{RUN}/HighValue_1.csv"),
        blob_event(app_env, durable_fake, f"{RUN}/HighValue_2.csv"),
        return_exceptions=True,
    )
    FIGURES.trigger_deliveries += len(again)
    assert [r for r in again if isinstance(r, BaseException)] == []
    assert len(durable_fake.starts) == 1
