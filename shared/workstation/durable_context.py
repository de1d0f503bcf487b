"""The azure-functions-durable 1.x orchestration context, served by the durabletask engine.

The export orchestrator is written once, as an azure-functions-durable generator
(``context.call_activity``, ``context.task_all``, ``context.create_timer``, ...). In
Azure the Functions host drives it. Locally the in-process durabletask engine drives
it instead: :func:`run_orchestrator` is a durabletask orchestrator that hands the
generator a :class:`DurableContext` and relays every task the generator yields, so
the same code, not a port of it, runs on both engines.

What the orchestrator sees is kept as it is in Azure:

- an activity that fails (after its retries) is raised into the generator as a plain
  ``Exception`` whose text is ``f"{reason} \\n {details}"``, the shape
  azure-functions-durable builds from the host's ``TaskFailed`` event, so one
  ``try/except Exception`` works on both engines;
- ``current_utc_datetime`` is timezone-aware UTC, as azure-functions-durable parses
  the host's timestamps;
- ``yield context.task_any(...)`` returns the winning task itself (compare it with
  ``is``/``==``) and a failed task's ``result`` is its exception.

Known difference: when one child of ``task_all`` fails, azure-functions-durable raises
at once while durabletask waits for the other children first. The generator sees the
same first failure either way; only the moment differs. Orchestrators should read
results from what ``task_all`` returns, never from sibling tasks after a failure.

This module imports neither ``azure.functions`` nor ``azure.durable_functions``:
retry options are accepted by shape (:class:`RetryOptionsLike`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime, timedelta
from types import GeneratorType
from typing import Any, Protocol

from durabletask import task

ActivityNameResolver = Callable[[object], str]
"""Turns what an orchestrator passes to ``call_activity`` (a name, or the activity
function object) into the name the activity is registered under."""


class RetryOptionsLike(Protocol):
    """What the shim reads from ``azure.durable_functions.RetryOptions``."""

    @property
    def first_retry_interval_in_milliseconds(self) -> int: ...

    @property
    def max_number_of_attempts(self) -> int: ...


def retry_policy(options: RetryOptionsLike) -> task.RetryPolicy:
    """The durabletask policy for azure-functions-durable retry options.

    Python ``RetryOptions`` has only two knobs; the host then retries at a fixed
    interval, so the backoff coefficient is 1. Both count attempts, not retries.
    """
    return task.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=options.first_retry_interval_in_milliseconds),
        max_number_of_attempts=options.max_number_of_attempts,
        backoff_coefficient=1.0,
    )


def activity_failure_text(name: str, error_type: str, message: str) -> tuple[str, str]:
    """The ``(reason, details)`` of a failed activity, as one line each.

    azure-functions-durable raises ``Exception(f"{reason} \\n {details}")``; the shim
    raises the same text, so a report built from ``str(exc)`` (or from its first line,
    the reason) reads the same on both engines. The shape follows what the host reports
    with the Azure Storage backend (reason ``Activity function '<name>' failed: ...``,
    details a JSON object with a ``Message``), but Azure's exact text is not promised:
    treat it as display text, never parse it. No stack trace: reports and logs carry
    the activity's own message only.
    """
    short_type = error_type.rsplit(".", 1)[-1]
    reason = f"Activity function '{name}' failed: {message}"
    details = json.dumps({"Message": f"{short_type}: {message}"})
    return reason, details


def failure_exception(name: str, error_type: str, message: str) -> Exception:
    """The exception an orchestrator catches when activity ``name`` failed for good."""
    reason, details = activity_failure_text(name, error_type, message)
    return Exception(f"{reason} \n {details}")


def default_activity_name(activity: object) -> str:
    """A string as it is; a function by its ``__name__``."""
    if isinstance(activity, str):
        return activity
    name = getattr(activity, "__name__", None)
    if isinstance(name, str):
        return name
    raise TypeError(f"cannot tell which activity {type(activity).__name__} is: pass its name")


class LocalTask:
    """A durabletask task seen through azure-functions-durable's task API.

    Orchestrators only yield these and read ``result``/``is_completed`` from them;
    the driver hands ``inner`` to durabletask.
    """

    def __init__(
        self,
        inner: task.Task[Any],
        *,
        activity: str | None = None,
        children: Sequence[LocalTask] = (),
        first_wins: bool = False,
    ) -> None:
        self.inner = inner
        self._activity = activity
        self._children = tuple(children)
        self._first_wins = first_wins
        self._failures: dict[int, Exception] = {}

    @property
    def is_completed(self) -> bool:
        return self.inner.is_complete

    @property
    def result(self) -> Any:
        """The value, the exception if the task failed, or None while it runs."""
        if not self.inner.is_complete:
            return None
        if self.inner.is_failed:
            return self.failure(self.inner.get_exception())
        return self.value()

    def value(self) -> Any:
        """What ``yield`` returns for this completed task under azure-functions-durable."""
        if self._first_wins:
            winner = self.inner.get_result()
            return next(child for child in self._children if child.inner is winner)
        if self._children:
            return [child.value() for child in self._children]
        return self.inner.get_result()

    def failure(self, error: task.TaskFailedError) -> Exception:
        """The plain exception azure-functions-durable would raise for ``error``.

        Cached per error, so the same failure is the same exception object.
        """
        known = self._failures.get(id(error))
        if known is None:
            name = self._failed_activity(error) or "unknown"
            known = failure_exception(name, error.details.error_type, error.details.message)
            self._failures[id(error)] = known
        return known

    def _failed_activity(self, error: task.TaskFailedError) -> str | None:
        failed_here = self._activity is not None and self.inner.is_failed
        if failed_here and self.inner.get_exception() is error:
            return self._activity
        for child in self._children:
            found = child._failed_activity(error)
            if found is not None:
                return found
        return None


class DurableContext:
    """``DurableOrchestrationContext`` (azure-functions-durable 1.x) on a durabletask context.

    Only what the export orchestrator uses is mapped; anything else is missing on
    purpose, so a new API in the orchestrator fails loudly in local runs and tests
    instead of behaving differently from Azure.
    """

    def __init__(
        self,
        context: task.OrchestrationContext,
        input_: Any,
        activity_name: ActivityNameResolver = default_activity_name,
    ) -> None:
        self._context = context
        self._input = input_
        self._activity_name = activity_name
        self._custom_status: Any = None

    def get_input(self, expected_type: type | None = None) -> Any:
        """The orchestration input, parsed from JSON as azure-functions-durable does."""
        del expected_type  # plain JSON values only, as in Azure
        return self._input

    @property
    def instance_id(self) -> str:
        return self._context.instance_id

    @property
    def is_replaying(self) -> bool:
        return self._context.is_replaying

    @property
    def current_utc_datetime(self) -> datetime:
        """The replay-safe clock, timezone-aware UTC as azure-functions-durable gives it."""
        now = self._context.current_utc_datetime
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    @property
    def custom_status(self) -> Any:
        return self._custom_status

    def set_custom_status(self, status: Any) -> None:
        self._custom_status = status
        self._context.set_custom_status(status)

    def new_uuid(self) -> str:
        return self._context.new_uuid()

    def call_activity(self, name: object, input_: Any = None) -> LocalTask:
        activity = self._activity_name(name)
        return LocalTask(self._context.call_activity(activity, input=input_), activity=activity)

    def call_activity_with_retry(
        self, name: object, retry_options: RetryOptionsLike, input_: Any = None
    ) -> LocalTask:
        activity = self._activity_name(name)
        scheduled: task.Task[Any] = self._context.call_activity(
            activity, input=input_, retry_policy=retry_policy(retry_options)
        )
        return LocalTask(scheduled, activity=activity)

    def task_all(self, tasks: Sequence[LocalTask]) -> LocalTask:
        children = list(tasks)
        return LocalTask(task.when_all([c.inner for c in children]), children=children)

    def task_any(self, tasks: Sequence[LocalTask]) -> LocalTask:
        children = list(tasks)
        winner = task.when_any([c.inner for c in children])
        return LocalTask(winner, children=children, first_wins=True)

    def create_timer(self, fire_at: datetime) -> LocalTask:
        return LocalTask(self._context.create_timer(fire_at))

    def continue_as_new(self, input_: Any) -> None:
        """End this generation; the engine starts the next under the same instance id
        with ``input_`` and a fresh history. The orchestrator returns right after, and
        what it returns is not the run's output (azure-functions-durable's contract)."""
        self._context.continue_as_new(input_)


Orchestrator = Callable[[Any], Any]
"""An azure-functions-durable orchestrator: a generator function of its context."""


def run_orchestrator(
    orchestrator: Orchestrator,
    context: task.OrchestrationContext,
    input_: Any,
    activity_name: ActivityNameResolver = default_activity_name,
) -> Generator[task.Task[Any], Any, Any]:
    """Drive an azure-functions-durable generator as a durabletask orchestrator.

    Not ``yield from``: durabletask sends back its own result shapes and throws
    ``TaskFailedError``; the generator must get azure-functions-durable's instead.
    After ``continue_as_new`` the generator's return value is ignored: durabletask
    keeps the continuation it was told of and drops a later completion.
    """
    body = orchestrator(DurableContext(context, input_, activity_name))
    if not isinstance(body, GeneratorType):
        return body
    send: Any = None
    throw: Exception | None = None
    while True:
        try:
            yielded = body.throw(throw) if throw is not None else body.send(send)
        except StopIteration as stop:
            return stop.value
        if not isinstance(yielded, LocalTask):
            raise TypeError(
                f"the orchestrator yielded a {type(yielded).__name__}; "
                "it may only yield tasks made by its context"
            )
        try:
            yield yielded.inner
        except task.TaskFailedError as error:
            send, throw = None, yielded.failure(error)
        else:
            send, throw = yielded.value(), None
