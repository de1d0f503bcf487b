"""A real Durable Task engine in this process, for local runs and end-to-end tests.

In Azure the export orchestrator runs on Durable Functions. Here (``ccexport run``,
``make run``, the end-to-end tests) the same azure-functions-durable generator and
the same activity functions run on durabletask's in-memory backend: a gRPC sidecar
on 127.0.0.1, a worker and a client, all owned and stopped by :class:`LocalEngine`.
The orchestrator reaches durabletask through :mod:`shared.workstation.durable_context`.

Activities may be plain functions or ``async def`` (as Functions allows). durabletask
only runs plain functions, in its thread pool, so a coroutine an activity returns is
run on one event loop that lives as long as the engine, in its own thread. One
long-lived loop rather than ``asyncio.run`` per call, because an aiohttp session
(its connection pool, keep-alive connections, cached tokens) belongs to the loop that
made it: with a loop per call a session shared between activities breaks on the
second call. It is also how the Functions Python worker runs async functions: all on
one loop. Resources made on that loop are closed by :meth:`LocalEngine.on_close`.

Each run is one trace, as on Azure, where the Functions host links the trigger, the
orchestration and its activities (Durable's distributed tracing): :meth:`LocalEngine.start`
opens a span in whatever trace it is called in and every activity of that instance
runs in it, so the steps' and requests' spans (shared/telemetry/) hang under the
start. durabletask's own activity spans, which its in-memory backend leaves without
a parent, stay beside.

durabletask is a development dependency: nothing under ``functions/`` imports this.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from durabletask import client as dt_client
from durabletask import task, worker
from durabletask.internal.orchestrator_service_pb2_grpc import (
    add_TaskHubSidecarServiceServicer_to_server,
)
from durabletask.testing import InMemoryOrchestrationBackend
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from shared.telemetry.spans import tracer
from shared.workstation.durable_context import Orchestrator, default_activity_name, run_orchestrator

T = TypeVar("T")

DEFAULT_ACTIVITY_CONCURRENCY = 8
"""Activities in flight at once; the same bound host.json gives Durable Functions
(``maxConcurrentActivityFunctions``), so local runs put the same load on the API."""

_TRACES_KEPT = 1_000
"""Runs whose trace context the engine remembers (the oldest are forgotten first)."""

_LOG = logging.getLogger("ccexport.local_engine")
logging.getLogger("durabletask.testing.in_memory_backend").setLevel(logging.WARNING)


class _ShutdownNoise(logging.Filter):
    """Drops the warnings durabletask logs when the engine itself cuts its stream."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.closing and record.levelno < logging.ERROR)


def _durabletask_logger(noise: _ShutdownNoise) -> logging.Logger:
    """A logger for one engine's worker and client: WARNING and up, under ours.

    durabletask logs every episode and call at INFO. Not registered by name, so
    each engine has its own filter; its records still reach ``ccexport.local_engine``.
    """
    log = logging.Logger("ccexport.local_engine.durabletask", logging.WARNING)
    log.parent = _LOG
    log.addFilter(noise)
    return log


class RuntimeStatus(StrEnum):
    """Run states, with the names azure-functions-durable's ``get_status`` uses."""

    RUNNING = "Running"
    COMPLETED = "Completed"
    CONTINUED_AS_NEW = "ContinuedAsNew"
    FAILED = "Failed"
    TERMINATED = "Terminated"
    PENDING = "Pending"
    SUSPENDED = "Suspended"

    @property
    def is_terminal(self) -> bool:
        return self in (RuntimeStatus.COMPLETED, RuntimeStatus.FAILED, RuntimeStatus.TERMINATED)

    @property
    def may_restart(self) -> bool:
        """A new run may take this instance id (Durable's "NonRunningStates" minus success)."""
        return self in (RuntimeStatus.FAILED, RuntimeStatus.TERMINATED)


_STATUS = {
    dt_client.OrchestrationStatus.RUNNING: RuntimeStatus.RUNNING,
    dt_client.OrchestrationStatus.COMPLETED: RuntimeStatus.COMPLETED,
    dt_client.OrchestrationStatus.CONTINUED_AS_NEW: RuntimeStatus.CONTINUED_AS_NEW,
    dt_client.OrchestrationStatus.FAILED: RuntimeStatus.FAILED,
    dt_client.OrchestrationStatus.TERMINATED: RuntimeStatus.TERMINATED,
    dt_client.OrchestrationStatus.PENDING: RuntimeStatus.PENDING,
    dt_client.OrchestrationStatus.SUSPENDED: RuntimeStatus.SUSPENDED,
}


@dataclass(frozen=True)
class RunState:
    """One orchestration run as the engine sees it; payloads parsed from JSON."""

    instance_id: str
    name: str
    status: RuntimeStatus
    output: Any
    custom_status: Any
    failure: str | None
    """The failure message when the run failed (the orchestrator's uncaught exception)."""
    failure_type: str | None = None
    """That exception's qualified type name."""
    created_at: datetime | None = None
    last_updated_at: datetime | None = None
    input: Any = None
    """The input of the run's current generation: after ``continue_as_new``, the one
    that generation was handed."""


@dataclass(frozen=True)
class InstanceStart:
    """What asking the engine to start an orchestration instance came to."""

    instance_id: str
    started: bool
    """False when a run with this instance id was running or had completed: it was kept."""
    status: RuntimeStatus


def _run_state(state: dt_client.OrchestrationState) -> RunState:
    details = state.failure_details
    return RunState(
        instance_id=state.instance_id,
        name=state.name,
        status=_STATUS[state.runtime_status],
        output=state.get_output(),
        custom_status=state.get_custom_status(),
        failure=details.message if details else None,
        failure_type=details.error_type if details else None,
        created_at=state.created_at,
        last_updated_at=state.last_updated_at,
        input=state.get_input(),
    )


class _EventLoopThread:
    """The one event loop async activities run on (see the module docstring for why)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="ccexport-async", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self._loop)
            for leftover in pending:
                leftover.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def run(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``awaitable`` on the loop and block this (worker) thread for its result."""
        done = asyncio.run_coroutine_threadsafe(_awaited(awaitable), self._loop)
        return done.result(timeout)

    def close(self, cleanups: list[Callable[[], Awaitable[None]]]) -> None:
        for cleanup in cleanups:
            try:
                self.run(cleanup(), timeout=10)
            except Exception:
                _LOG.warning("a cleanup on the activity event loop failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class LocalEngine:
    """The durabletask in-memory engine, its worker and its client, in this process.

    Register orchestrators and activities, enter the engine (``with``), then
    :meth:`start` runs and :meth:`wait` for them. Everything it starts (gRPC server,
    worker threads, the event loop thread) is stopped on exit.
    """

    def __init__(
        self,
        *,
        activity_concurrency: int = DEFAULT_ACTIVITY_CONCURRENCY,
        orchestration_concurrency: int = 2,
    ) -> None:
        if activity_concurrency < 1 or orchestration_concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.activity_concurrency = activity_concurrency
        self.orchestration_concurrency = orchestration_concurrency
        self._orchestrators: dict[str, Orchestrator] = {}
        self._activities: dict[str, Callable[[Any], Any]] = {}
        self._activity_names: dict[int, str] = {}
        self._activity_callers: dict[str, object] = {}
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._start_lock = threading.Lock()
        self._backend: InMemoryOrchestrationBackend | None = None
        self._server: grpc.Server | None = None
        self._client: dt_client.TaskHubGrpcClient | None = None
        self._worker: worker.TaskHubGrpcWorker | None = None
        self._loop: _EventLoopThread | None = None
        self._noise = _ShutdownNoise()
        self._log = _durabletask_logger(self._noise)
        self._traces: dict[str, otel_context.Context] = {}
        """Instance id -> the trace context its start made (see start())."""
        self.address: str | None = None
        """``127.0.0.1:<port>`` of the engine's gRPC sidecar while it is open."""

    # -- registration -------------------------------------------------------------

    def register_orchestrator(self, name: str, orchestrator: Orchestrator) -> None:
        """Register an azure-functions-durable generator function under ``name``.

        Pass the generator function itself, not the decorated Functions object (whose
        call expects the host's JSON): ``fn.build().get_user_function()
        .orchestrator_function`` gets it back from a ``df.Blueprint`` orchestrator.
        """
        self._check_open_for_registration(name, self._orchestrators)
        self._orchestrators[name] = orchestrator

    def register_activity(
        self, name: str, activity: Callable[[Any], Any], *, called_as: object = None
    ) -> None:
        """Register an activity: a function of its input, plain or ``async``.

        Orchestrators that pass ``called_as`` to ``call_activity`` (the decorated
        Functions activity) are routed here by identity, whatever its ``__name__``;
        without it, ``activity`` itself is that object.
        """
        self._check_open_for_registration(name, self._activities)
        self._activities[name] = activity
        caller = activity if called_as is None else called_as
        self._activity_callers[name] = caller
        self._activity_names[id(caller)] = name

    def on_close(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run ``await cleanup()`` on the activity event loop when the engine closes."""
        self._cleanups.append(cleanup)

    def activity_name(self, activity: object) -> str:
        """The registered name of what an orchestrator passed to ``call_activity``."""
        known = self._activity_names.get(id(activity))
        if known is not None and self._activity_callers.get(known) is activity:
            return known
        name = default_activity_name(activity)
        if name not in self._activities:
            raise LookupError(f"no activity named {name!r} is registered with the local engine")
        return name

    def _check_open_for_registration(self, name: str, table: dict[str, Any]) -> None:
        if self._worker is not None:
            raise RuntimeError("register orchestrators and activities before the first start()")
        if not name:
            raise ValueError("a name is required")
        if name in table:
            raise ValueError(f"{name!r} is already registered")

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start the backend on a free loopback port, the client and the event loop."""
        if self._server is not None:
            raise RuntimeError("the engine is already open")
        try:
            # The backend's own start() listens on every interface ([::]); serve it
            # on loopback only, on a port the OS picks (no race for a "free" port).
            backend = InMemoryOrchestrationBackend()
            server = grpc.server(
                ThreadPoolExecutor(max_workers=16, thread_name_prefix="dt-sidecar")
            )
            add_TaskHubSidecarServiceServicer_to_server(backend, server)  # type: ignore[no-untyped-call]
            port = server.add_insecure_port("127.0.0.1:0")
            self._backend, self._server = backend, server
            server.start()
            self.address = f"127.0.0.1:{port}"
            self._noise.closing = False
            self._client = dt_client.TaskHubGrpcClient(host_address=self.address, logger=self._log)
            self._loop = _EventLoopThread()
        except BaseException:
            self.close()
            raise

    def _ensure_worker(self) -> worker.TaskHubGrpcWorker:
        """Start the worker at the first run, once everything is registered."""
        if self._worker is not None:
            return self._worker
        if self.address is None or self._loop is None:
            raise RuntimeError("open the engine first (use it as a context manager)")
        options = worker.ConcurrencyOptions(
            maximum_concurrent_activity_work_items=self.activity_concurrency,
            maximum_concurrent_orchestration_work_items=self.orchestration_concurrency,
            # Orchestrations and activities share this pool; a blocked activity holds
            # a thread, so size it for both or a full window would starve replays.
            maximum_thread_pool_workers=self.activity_concurrency + self.orchestration_concurrency,
        )
        dt_worker = worker.TaskHubGrpcWorker(
            host_address=self.address, logger=self._log, concurrency_options=options
        )
        for name, orchestrator in self._orchestrators.items():
            dt_worker.add_orchestrator(self._orchestrator_adapter(name, orchestrator))
        for name, activity in self._activities.items():
            dt_worker.add_activity(self._activity_adapter(name, activity, self._loop))
        # Started from a daemon thread, so the worker's own thread is a daemon too:
        # see close() for why.
        starter = threading.Thread(target=dt_worker.start, name="dt-starter", daemon=True)
        starter.start()
        starter.join()
        self._worker = dt_worker
        return dt_worker

    @staticmethod
    def _stop_worker(dt_worker: worker.TaskHubGrpcWorker) -> None:
        """Tell the worker to stop without waiting for it to be gone.

        durabletask's worker notices a stop only when its queue wait times out, a
        second after its last work item: waiting for it cost every run (and every
        end-to-end test) a second. Our orchestrations are finished when the engine
        closes, so the worker is told to stop (its stream cancelled at once) and its
        daemon thread ends on its own, within that second.
        """
        stopping = threading.Thread(target=dt_worker.stop, name="dt-stop", daemon=True)
        stopping.start()
        stopping.join(timeout=0.05)

    def _orchestrator_adapter(
        self, name: str, orchestrator: Orchestrator
    ) -> Callable[[task.OrchestrationContext, Any], Any]:
        def orchestrate(context: task.OrchestrationContext, input_: Any) -> Any:
            return run_orchestrator(orchestrator, context, input_, self.activity_name)

        orchestrate.__name__ = name  # durabletask registers by __name__
        return orchestrate

    def _activity_adapter(
        self, name: str, activity: Callable[[Any], Any], loop: _EventLoopThread
    ) -> Callable[[task.ActivityContext, Any], Any]:
        traces = self._traces

        def perform(context: task.ActivityContext, input_: Any) -> Any:
            # In the trace the run was started in (see start()); the coroutine below
            # runs on the loop's thread in a copy of this thread's context.
            started_in = traces.get(context.orchestration_id)
            token = otel_context.attach(started_in) if started_in is not None else None
            try:
                result = activity(input_)
                if inspect.isawaitable(result):
                    return loop.run(result)
                return result
            finally:
                if token is not None:
                    otel_context.detach(token)

        perform.__name__ = name
        return perform

    def close(self) -> None:
        """Stop the worker, the client, the gRPC server and the event loop; idempotent."""
        self._noise.closing = True
        steps: list[Callable[[], None]] = []
        if self._worker is not None:
            dt_worker = self._worker
            steps.append(lambda: self._stop_worker(dt_worker))
        if self._client is not None:
            steps.append(self._client.close)
        if self._backend is not None:
            steps.append(self._backend.stop)  # wakes the worker's work-item stream
        if self._server is not None:
            server = self._server
            steps.append(lambda: server.stop(grace=1).wait())
        if self._backend is not None:
            steps.append(self._backend.reset)
        if self._loop is not None:
            loop, cleanups = self._loop, list(self._cleanups)
            steps.append(lambda: loop.close(cleanups))
        self._worker = self._client = self._backend = self._server = self._loop = None
        self.address = None
        errors: list[BaseException] = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep stopping the rest
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- runs ---------------------------------------------------------------------

    @property
    def client(self) -> dt_client.TaskHubGrpcClient:
        if self._client is None:
            raise RuntimeError("the engine is not open")
        return self._client

    def start(
        self,
        name: str,
        input_: Any = None,
        *,
        instance_id: str | None = None,
        replace_completed: bool = False,
    ) -> InstanceStart:
        """Start orchestrator ``name``, unless ``instance_id`` is running or completed.

        A failed or terminated run with the same id is replaced, as Durable Functions'
        singleton pattern does; a running or completed one is kept and reported
        (``started=False``), so a repeated start is harmless. ``replace_completed``
        replaces a completed run too, as the host does with host.json's
        ``overridableExistingInstanceStates: NonRunningStates``.
        """
        if name not in self._orchestrators:
            raise LookupError(f"no orchestrator named {name!r} is registered")
        self._ensure_worker()
        with self._start_lock:
            if instance_id:
                existing = self.status(instance_id)
                if existing is not None:
                    replaceable = existing.status.may_restart or (
                        replace_completed and existing.status is RuntimeStatus.COMPLETED
                    )
                    if not replaceable:
                        return InstanceStart(instance_id, started=False, status=existing.status)
                    self.client.purge_orchestration(instance_id)
            with tracer().start_as_current_span(
                f"start {name}", kind=SpanKind.PRODUCER, record_exception=False
            ) as span:
                new_id = self.client.schedule_new_orchestration(
                    name, input=input_, instance_id=instance_id
                )
                span.set_attribute("ccexport.instance_id", new_id)
                self._traces[new_id] = otel_context.get_current()
                while len(self._traces) > _TRACES_KEPT:  # serve's engine lives for days
                    del self._traces[next(iter(self._traces))]
        return InstanceStart(new_id, started=True, status=RuntimeStatus.PENDING)

    def status(self, instance_id: str) -> RunState | None:
        """The run's current state, or None if there is no such run."""
        state = self.client.get_orchestration_state(instance_id)
        return None if state is None else _run_state(state)

    def wait(
        self,
        instance_id: str,
        timeout: float,
        *,
        on_progress: Callable[[RunState], None] | None = None,
        poll_interval: float = 0.25,
    ) -> RunState:
        """Block until the run ends (completed, failed or terminated) and return its state.

        A run that continues as new has not ended: the wait goes on through every
        generation (between two, the instance is ``ContinuedAsNew`` or ``Pending``),
        and the state returned is the last generation's.

        ``on_progress`` is called from this thread whenever the run's custom status
        changes (checked every ``poll_interval`` seconds), and once more at the end if
        the final status differs from the last one reported. Raises ``TimeoutError``
        after ``timeout`` seconds and ``LookupError`` for an unknown run.
        """
        deadline = time.monotonic() + timeout
        reported: Any = _NOTHING
        current = self.status(instance_id)
        if current is None:
            raise LookupError(f"no run with instance id {instance_id!r}")
        while True:
            if on_progress is not None and current.custom_status != reported:
                reported = current.custom_status
                on_progress(current)
            if current.status.is_terminal:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"run {instance_id!r} did not finish within {timeout:g} s")
            step = remaining if on_progress is None else min(poll_interval, remaining)
            try:
                state = self.client.wait_for_orchestration_completion(instance_id, timeout=step)
            except TimeoutError:
                state = self.client.get_orchestration_state(instance_id)
            if state is None:
                raise LookupError(f"run {instance_id!r} disappeared while waiting")
            current = _run_state(state)

    def run(self, name: str, input_: Any = None, *, timeout: float = 60.0) -> RunState:
        """Start a run and wait for it: the one call tests usually need."""
        started = self.start(name, input_)
        return self.wait(started.instance_id, timeout)


_NOTHING: Any = object()
"""Never equal to a parsed custom status, so the first one is always reported."""
