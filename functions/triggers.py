"""Runs started by the inbox and by the clock.

``segment_blob_created``: Event Grid delivers a BlobCreated event for every file
Customer Insights writes into the inbox, at least once and in any order. The trigger
binds a ``BlobClient`` (an SDK-type binding: the host passes only the blob's address,
so a part of several hundred MB is never read here), and hands the name to
shared.runs.launcher, which starts each matching export once its run folder is complete,
and never the same run twice.

``scheduled_refresh``: on ``EXPORT_SCHEDULE`` (NCRONTAB), every enabled export from
its newest complete run folder; folders already sent under the same definition are
skipped, so a frequent schedule costs a listing, not a resend. It also picks up run
folders that became complete by quiet time, when no later event came.

``purge_history``: daily, deletes the Durable history of ended runs older than
``DURABLE_HISTORY_DAYS`` (shared/runs/retention.py says what and why).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.bindings import blob

from functions.services import services
from shared.config import STORAGE_CONNECTION
from shared.runs import retention
from shared.runs.launcher import Outcome, RunStart

log = logging.getLogger(__name__)

bp = df.Blueprint()


def _summary(results: list[RunStart]) -> str:
    started = sum(r.outcome is Outcome.STARTED for r in results)
    return f"{started} started, {len(results) - started} already running or done"


@bp.blob_trigger(
    arg_name="client",
    path="%INBOX_CONTAINER%/{name}",
    connection=STORAGE_CONNECTION,
    source=func.BlobSource.EVENT_GRID,
)
@bp.durable_client_input(client_name="durable")
async def segment_blob_created(
    client: blob.BlobClient, durable: df.DurableOrchestrationClient
) -> None:
    """A file arrived in the inbox: start the runs whose folder it completes."""
    name = str(client.blob_name)
    async with services() as app:
        results = await app.launcher(durable).on_blob_created(name)
    if results:
        log.info("inbox %r: %s", name, _summary(results))


@bp.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False)
@bp.durable_client_input(client_name="durable")
async def scheduled_refresh(
    timer: func.TimerRequest, durable: df.DurableOrchestrationClient
) -> None:
    """The schedule: refresh every enabled export from its newest complete run folder."""
    if timer.past_due:
        log.info("scheduled refresh is running late")
    async with services() as app:
        results = await app.launcher(durable).refresh_all()
    log.info("scheduled refresh: %s", _summary(results))


@bp.timer_trigger(arg_name="timer", schedule=retention.PURGE_SCHEDULE, run_on_startup=False)
@bp.durable_client_input(client_name="durable")
async def purge_history(timer: func.TimerRequest, durable: df.DurableOrchestrationClient) -> None:
    """Daily: forget the Durable history of runs that ended long ago."""
    del timer
    window = retention.purge_window(os.environ, datetime.now(UTC))
    result = await durable.purge_instance_history_by(
        created_time_from=window.since,
        created_time_to=window.before,
        runtime_status=[df.OrchestrationRuntimeStatus(s) for s in retention.ENDED],
    )
    log.info(
        "durable history: %d ended runs created before %s purged (older than %d days)",
        result.instances_deleted,
        window.before.isoformat(timespec="seconds"),
        window.days,
    )
