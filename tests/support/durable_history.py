"""Drive an azure-functions-durable 1.x orchestrator by replay, without the Functions host.

The host runs a Python orchestrator by sending it the run's history as JSON and
reading back its state (actions to schedule, custom status, output or error). This
module builds such histories (:class:`History`), replays one through the SDK's own
``Orchestrator.handle`` (:func:`replay`), and plays the host episode after episode
(:func:`run_by_replay`): it schedules what the orchestrator asks for, runs the
activities, fires timers, retries as ``RetryOptions`` say, and checks at every
episode that the orchestrator asks again for what it asked before (determinism).

Event and action shapes are those azure-functions-durable 1.7.0 reads and writes
(``HistoryEvent``, ``OrchestratorState``); only what our orchestrators use is here.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from azure.durable_functions import Orchestrator
from azure.durable_functions.models.DurableOrchestrationContext import (
    DurableOrchestrationContext,
)

from shared.workstation.durable_context import activity_failure_text

START = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"


class EventType(IntEnum):
    """History event types, numbered as the Durable extension numbers them."""

    EXECUTION_STARTED = 0
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13


class ActionType(IntEnum):
    """Action types in an orchestrator's state, as azure-functions-durable writes them."""

    CALL_ACTIVITY = 0
    CALL_ACTIVITY_WITH_RETRY = 1
    CONTINUE_AS_NEW = 4
    CREATE_TIMER = 5
    WHEN_ANY = 11
    WHEN_ALL = 12


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


class History:
    """One orchestration's history, event by event, as the host would send it."""

    def __init__(
        self,
        name: str,
        input_: Any = None,
        *,
        instance_id: str = "replay-instance",
        start: datetime = START,
        version: str = "",
        schema_version: int = 1,
    ) -> None:
        self.instance_id = instance_id
        self.schema_version = schema_version
        self.input_json = None if input_ is None else json.dumps(input_)
        self.events: list[dict[str, Any]] = []
        self.orchestrator_started(start)
        # ExecutionStarted must carry Version: azure-functions-durable 1.7.0 reads it.
        self._add(
            EventType.EXECUTION_STARTED, start, Name=name, Input=self.input_json, Version=version
        )

    def _add(self, kind: EventType, at: datetime, event_id: int = -1, **fields: Any) -> None:
        event: dict[str, Any] = {"EventType": int(kind), "EventId": event_id, "IsPlayed": False}
        self.events.append(event | {"Timestamp": timestamp(at)} | fields)

    def orchestrator_started(self, at: datetime) -> None:
        """Opens an episode; its timestamp is the orchestrator's clock for that episode."""
        self._add(EventType.ORCHESTRATOR_STARTED, at)

    def orchestrator_completed(self, at: datetime) -> None:
        self._add(EventType.ORCHESTRATOR_COMPLETED, at)

    def task_scheduled(self, task_id: int, name: str, input_json: str | None, at: datetime) -> None:
        self._add(EventType.TASK_SCHEDULED, at, task_id, Name=name, Input=input_json)

    def task_completed(self, task_id: int, result: Any, at: datetime) -> None:
        self._add(EventType.TASK_COMPLETED, at, TaskScheduledId=task_id, Result=json.dumps(result))

    def task_failed(self, task_id: int, reason: str, details: str, at: datetime) -> None:
        self._add(
            EventType.TASK_FAILED, at, TaskScheduledId=task_id, Reason=reason, Details=details
        )

    def timer_created(self, timer_id: int, fire_at: datetime, at: datetime) -> None:
        self._add(EventType.TIMER_CREATED, at, timer_id, FireAt=timestamp(fire_at))

    def timer_fired(self, timer_id: int, fire_at: datetime, at: datetime) -> None:
        self._add(EventType.TIMER_FIRED, at, TimerId=timer_id, FireAt=timestamp(fire_at))

    def count(self, kind: EventType) -> int:
        return sum(1 for event in self.events if event["EventType"] == kind)

    def to_json(self) -> str:
        """The orchestration trigger's payload; events before the last episode are played."""
        starts = [
            i for i, e in enumerate(self.events) if e["EventType"] == EventType.ORCHESTRATOR_STARTED
        ]
        current = starts[-1]
        events = [e | {"IsPlayed": i < current} for i, e in enumerate(self.events)]
        return json.dumps(
            {
                "history": events,
                "instanceId": self.instance_id,
                "isReplaying": current > 0,
                "parentInstanceId": None,
                "input": self.input_json,
                "upperSchemaVersion": self.schema_version,
            }
        )


@dataclass(frozen=True)
class ReplayState:
    """What one replay returned to the host, parsed."""

    is_done: bool
    output: Any
    actions: list[list[dict[str, Any]]]
    custom_status: Any
    error: str | None

    def flat_actions(self) -> list[dict[str, Any]]:
        """Every scheduling action in order, compound actions (task_all/any) opened."""
        flat: list[dict[str, Any]] = []

        def walk(action: dict[str, Any]) -> None:
            if action["actionType"] in (ActionType.WHEN_ALL, ActionType.WHEN_ANY):
                for inner in action["compoundActions"]:
                    walk(inner)
            else:
                flat.append(action)

        for group in self.actions:
            for action in group:
                walk(action)
        return flat


def replay(orchestrator: Callable[[Any], Any], history: History) -> ReplayState:
    """Replay ``history`` through the SDK, as the host does for one episode.

    An orchestrator that raises makes ``handle`` raise an exception whose text ends
    with ``$OutOfProcData$:`` and the state JSON (the host parses it the same way).
    """
    context = DurableOrchestrationContext.from_json(history.to_json())
    try:
        raw = Orchestrator(orchestrator).handle(context)
    except Exception as exc:
        text = str(exc)
        if OUT_OF_PROC_MARKER not in text:
            raise
        raw = text.split(OUT_OF_PROC_MARKER, 1)[1]
    state = json.loads(raw)
    return ReplayState(
        is_done=bool(state["isDone"]),
        output=state.get("output"),
        actions=state["actions"],
        custom_status=state.get("customStatus"),
        error=state.get("error"),
    )


class NonDeterminismError(AssertionError):
    """A replay asked for something other than what earlier episodes asked for."""


def assert_deterministic(
    orchestrator: Callable[[Any], Any], history: History, scheduled: list[dict[str, Any]]
) -> ReplayState:
    """Replay ``history`` twice: both must agree, and with what was ``scheduled`` so far."""
    first, second = replay(orchestrator, history), replay(orchestrator, history)
    if first != second:
        raise NonDeterminismError("two replays of the same history gave different states")
    asked = first.flat_actions()[: len(scheduled)]
    for index, (before, now) in enumerate(zip(scheduled, asked, strict=False)):
        if before != now:
            raise NonDeterminismError(f"action {index} was {before}, replay asked for {now}")
    if len(asked) < len(scheduled):
        raise NonDeterminismError(f"replay asked for {len(asked)} of {len(scheduled)} actions")
    return first


ActivityRunner = Callable[[str, Any], Any]
"""Runs activity ``name`` on ``input``; returns its result, or returns/raises its error."""


def activities(functions: Mapping[str, Callable[[Any], Any]]) -> ActivityRunner:
    """An :data:`ActivityRunner` over real activity functions, plain or ``async``."""

    def run(name: str, input_: Any) -> Any:
        result = functions[name](input_)
        if inspect.isawaitable(result):
            return asyncio.run(_awaited(result))
        return result

    return run


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


@dataclass
class _Call:
    task_id: int
    name: str
    input_json: str | None
    due: datetime
    retry: dict[str, int] | None = None
    attempt: int = 1

    @property
    def order(self) -> tuple[datetime, int]:
        return self.due, self.task_id


@dataclass
class _Timer:
    task_id: int
    due: datetime
    retry_of: _Call | None = None

    @property
    def order(self) -> tuple[datetime, int]:
        return self.due, self.task_id


@dataclass
class Clock:
    """The simulated time of :func:`run_by_replay`, for activities that read it."""

    now: datetime = START


@dataclass
class HostRun:
    """A whole orchestration played by :func:`run_by_replay`.

    ``history`` and ``scheduled`` are the last generation's; ``generations`` holds
    every generation's history, the last included, and ``continued`` the input each
    ``continue_as_new`` handed on.
    """

    history: History
    final: ReplayState
    episodes: int
    calls: list[tuple[str, Any]] = field(default_factory=list)
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    generations: list[History] = field(default_factory=list)
    continued: list[Any] = field(default_factory=list)


def run_by_replay(
    orchestrator: Callable[[Any], Any],
    input_: Any,
    run_activity: ActivityRunner,
    *,
    name: str = "orchestrator",
    instance_id: str = "replay-instance",
    activity_time: timedelta = timedelta(seconds=1),
    max_episodes: int = 1000,
    clock: Clock | None = None,
) -> HostRun:
    """Play the host until the orchestrator finishes (returns or raises).

    An orchestrator that calls ``continue_as_new`` ends its generation: as the host
    does, the next starts under the same instance id with the new input and a history
    of its own (a timer or activity still pending is dropped, as the host drops it).
    ``clock`` (optional) is moved along with the simulated time.

    One completion (an activity result or a fired timer) is delivered per episode,
    earliest first on a simulated clock: activities take ``activity_time``, timers
    fire at their time. Task ids follow the host's order (each new action, each
    retry timer, each retried attempt takes the next id), which is the order
    azure-functions-durable assigns them in during replay. Retries follow
    ``RetryOptions`` as the Durable extension does, including the extra timer after
    the last failed attempt. Every episode is replayed twice and checked against
    what earlier episodes scheduled (:func:`assert_deterministic`).
    """
    simulated = clock or Clock()
    clock_at = simulated.now
    history = History(name, input_, instance_id=instance_id, start=clock_at)
    run = HostRun(history=history, final=replay(orchestrator, history), episodes=0)
    run.generations.append(history)
    pending: list[_Call | _Timer] = []
    next_id = 0
    for episode in range(1, max_episodes + 1):
        state = assert_deterministic(orchestrator, history, run.scheduled)
        run.final, run.episodes = state, episode
        continued = [
            a for a in state.flat_actions() if a["actionType"] == ActionType.CONTINUE_AS_NEW
        ]
        if continued and state.error is None:
            new_input = json.loads(continued[-1]["input"])
            run.continued.append(new_input)
            history = History(name, new_input, instance_id=instance_id, start=clock_at)
            run.generations.append(history)
            run.history, run.scheduled, pending, next_id = history, [], [], 0
            continue
        if state.is_done or state.error is not None:
            return run
        for action in state.flat_actions()[len(run.scheduled) :]:
            run.scheduled.append(action)
            kind = action["actionType"]
            if kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY):
                call = _Call(
                    next_id,
                    action["functionName"],
                    action.get("input"),
                    due=clock_at + activity_time,
                    retry=action.get("retryOptions"),
                )
                history.task_scheduled(call.task_id, call.name, call.input_json, clock_at)
                pending.append(call)
            elif kind == ActionType.CREATE_TIMER:
                timer = _Timer(next_id, parse_timestamp(action["fireAt"]))
                history.timer_created(timer.task_id, timer.due, clock_at)
                pending.append(timer)
            else:
                raise NotImplementedError(f"action type {kind} is not simulated")
            next_id += 1
        history.orchestrator_completed(clock_at)
        if not pending:
            raise AssertionError("the orchestrator waits, but nothing it waits for is scheduled")
        item = min(pending, key=lambda p: p.order)
        pending.remove(item)
        clock_at = max(clock_at, item.due)
        simulated.now = clock_at
        history.orchestrator_started(clock_at)
        if isinstance(item, _Call):
            outcome = _perform(run_activity, item, run.calls)
            if not isinstance(outcome, Exception):
                history.task_completed(item.task_id, outcome, clock_at)
                continue
            reason, details = activity_failure_text(item.name, type(outcome).__name__, str(outcome))
            history.task_failed(item.task_id, reason, details, clock_at)
            if item.retry is not None:
                wait = timedelta(milliseconds=item.retry["firstRetryIntervalInMilliseconds"])
                timer = _Timer(next_id, clock_at + wait, retry_of=item)
                history.timer_created(timer.task_id, timer.due, clock_at)
                pending.append(timer)
                next_id += 1
        else:
            history.timer_fired(item.task_id, item.due, clock_at)
            again = _next_attempt(item.retry_of, next_id, clock_at + activity_time)
            if again is not None:
                history.task_scheduled(again.task_id, again.name, again.input_json, clock_at)
                pending.append(again)
                next_id += 1
    raise AssertionError(f"the orchestrator did not finish in {max_episodes} episodes")


def _next_attempt(failed: _Call | None, task_id: int, due: datetime) -> _Call | None:
    """The retry of ``failed`` once its retry timer fired, if it has attempts left."""
    if failed is None or failed.retry is None:
        return None
    if failed.attempt >= failed.retry["maxNumberOfAttempts"]:
        return None  # the extra timer after the last attempt: the failure now surfaces
    return _Call(
        task_id,
        failed.name,
        failed.input_json,
        due=due,
        retry=failed.retry,
        attempt=failed.attempt + 1,
    )


def _perform(run_activity: ActivityRunner, call: _Call, log: list[tuple[str, Any]]) -> Any:
    input_ = None if call.input_json is None else json.loads(call.input_json)
    log.append((call.name, input_))
    try:
        return run_activity(call.name, input_)
    except Exception as exc:
        return exc
