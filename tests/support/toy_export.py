"""A toy export orchestrator, written once against azure-functions-durable 1.x.

It has the shape of the real export (plan, upload chunks in bounded windows with
retries, poll an asynchronous import on a durable timer racing a deadline, report)
so the local engine and the replay helpers are tested on the patterns the real
orchestrator uses. The activities are registered with a ``df.Blueprint`` as in the
function app, and the orchestrator passes the decorated activities themselves to
``call_activity`` (one by name, to cover that form too).

The job input drives failures, so runs are deterministic: chunks listed in
``flaky`` fail twice then succeed, chunks in ``broken`` always fail, and the report
step always fails when ``report_fails`` is set.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from azure.durable_functions import Blueprint, RetryOptions

RETRY_MS = 50
ATTEMPTS = 3

bp = Blueprint()

attempts: Counter[str] = Counter()
"""Calls per activity and chunk, keyed with the job's ``run`` tag so tests don't mix."""


class ChunkError(Exception):
    """An upload the (imaginary) API refused."""


def plan_chunks(job: dict[str, Any]) -> list[dict[str, Any]]:
    def fate(chunk: int) -> str:
        if chunk in job.get("broken", ()):
            return "broken"
        return "flaky" if chunk in job.get("flaky", ()) else "fine"

    return [
        {"run": job["run"], "chunk": i, "contacts": 100 + i, "fate": fate(i)}
        for i in range(job["chunks"])
    ]


def upload_chunk(ref: dict[str, Any]) -> dict[str, Any]:
    key = f"{ref['run']}/upload/{ref['chunk']}"
    attempts[key] += 1
    if ref["fate"] == "broken":
        raise ChunkError(f"chunk {ref['chunk']} is malformed")
    if ref["fate"] == "flaky" and attempts[key] <= 2:
        raise ChunkError(f"chunk {ref['chunk']} got a 503")
    return {"chunk": ref["chunk"], "imported": ref["contacts"]}


async def check_import(poll: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.001)  # a real await, so the engine must run it on a loop
    return {"done": poll["attempt"] >= poll["polls_needed"]}


def send_report(summary: dict[str, Any]) -> str:
    attempts[f"{summary['run']}/report"] += 1
    if summary["report_fails"]:
        raise ConnectionError("mail relay refused the report")
    return "sent"


PLAN_CHUNKS = bp.activity_trigger(input_name="job")(plan_chunks)
UPLOAD_CHUNK = bp.activity_trigger(input_name="ref")(upload_chunk)
CHECK_IMPORT = bp.activity_trigger(input_name="poll")(check_import)
SEND_REPORT = bp.activity_trigger(input_name="summary")(send_report)

ACTIVITIES: dict[str, Any] = {
    "plan_chunks": PLAN_CHUNKS,
    "upload_chunk": UPLOAD_CHUNK,
    "check_import": CHECK_IMPORT,
    "send_report": SEND_REPORT,
}
"""Activity name → the decorated activity, as the function app would register them."""


def job(run: str, **overrides: Any) -> dict[str, Any]:
    """A job input: 10 chunks in windows of 4, chunk 3 flaky, 3 polls."""
    return {
        "run": run,
        "chunks": 10,
        "window": 4,
        "flaky": [3],
        "broken": [],
        "polls": 3,
        "poll_ms": 50,
        "deadline_ms": 30_000,
        "report_fails": False,
    } | overrides


def reason(exc: Exception) -> str:
    """The first line of an activity failure: the same text on both engines."""
    return str(exc).split(" \n ", 1)[0]


def toy_export(context: Any) -> Generator[Any, Any, dict[str, Any]]:
    spec = context.get_input()
    retry = RetryOptions(RETRY_MS, ATTEMPTS)
    refs = yield context.call_activity(PLAN_CHUNKS, spec)
    total, done, imported = len(refs), 0, 0
    context.set_custom_status({"phase": "uploading", "done": 0, "total": total})
    for start in range(0, total, spec["window"]):
        window = refs[start : start + spec["window"]]
        uploads = [context.call_activity_with_retry(UPLOAD_CHUNK, retry, ref) for ref in window]
        results = yield context.task_all(uploads)
        done += len(results)
        imported += sum(result["imported"] for result in results)
        context.set_custom_status({"phase": "uploading", "done": done, "total": total})

    polls = 0
    while True:
        polls += 1
        check = context.call_activity(
            "check_import", {"attempt": polls, "polls_needed": spec["polls"]}
        )
        deadline = context.create_timer(
            context.current_utc_datetime + timedelta(milliseconds=spec["deadline_ms"])
        )
        winner = yield context.task_any([check, deadline])
        if winner is deadline:
            raise TimeoutError("the import did not answer in time")
        if winner.result["done"]:
            break
        context.set_custom_status({"phase": "waiting", "polls": polls})
        yield context.create_timer(
            context.current_utc_datetime + timedelta(milliseconds=spec["poll_ms"])
        )

    summary: dict[str, Any] = {"chunks": total, "imported": imported, "polls": polls}
    report = summary | {
        "run": spec["run"],
        "report_fails": spec["report_fails"],
        "report_id": context.new_uuid(),
    }
    try:
        summary["report"] = yield context.call_activity_with_retry(SEND_REPORT, retry, report)
    except Exception as exc:
        summary["report"] = f"not sent: {reason(exc)}"
    context.set_custom_status({"phase": "done", "done": done, "total": total})
    return summary


TOY_EXPORT = bp.orchestration_trigger(context_name="context")(toy_export)
"""The orchestrator as the function app registers it (what the host calls)."""


def replay_flags(context: Any) -> Generator[Any, Any, list[bool]]:
    """Records ``is_replaying`` before each step: both engines must agree."""
    flags = []
    for step in range(2):
        flags.append(context.is_replaying)
        yield context.call_activity(PLAN_CHUNKS, {"run": "flags", "chunks": step})
    flags.append(context.is_replaying)
    return flags
