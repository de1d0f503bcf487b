"""Export runs under injected faults, on the local Durable Task engine, the segment and
the run store in Azurite, against the sandbox. Each ends with the three promises of
tests/chaos/promises.py: the list holds exactly the valid contacts, no chunk was
imported more than twice, every report accounts for every row.

Faults that Constant Contact's side injects (the sandbox's dice, seeded):

- 10 % of API requests answered 503; 5 % of connections reset before the request is
  handled; one import whose answer is lost after it was carried out (the client cannot
  know it went, sends it again: a chunk sent twice, on purpose);
- imports that end ``failed`` or ``timed_out`` (nothing applied; the run reports them,
  keeps their bodies, and the same run id sends them again);
- the token endpoint answering 503 while access tokens expire every few seconds;
- throttling bursts: another client of the same API key takes the per-second budget;
- all of them at once.

Every fault is aimed at the run's own authorization (the tokens it was connected with)
and made certain to reach it (``by``: one of the first few chances gets it, whatever
the dice say), and every test then proves the fault reached THIS run from both ends
(tests/chaos/evidence.py): what the sandbox injected into the requests of the run's
authorization, and what the run's own clients and reports did about it (retries,
bodies sent again, throttled answers, failed token requests, chunks reported failed).
A run that met nothing fails its test.

Key Vault errors and a killed process have tests of their own (test_keyvault.py,
test_kill.py).
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.constant_contact.pacing import PACING_MARGIN, Pacer
from tests.chaos.evidence import CountingActivities, Met, Tally, aimed, met
from tests.chaos.figures import FIGURES
from tests.chaos.promises import (
    Rounds,
    check_delivery,
    connect_locally,
    env_for,
    options,
    run_input,
    run_to_the_end,
    services_for,
)
from tests.chaos.scale import SCALE
from tests.chaos.segment import Segment, upload, write_segment
from tests.support.ctct_support import FAST
from tests.support.sandbox_service import RunningSandbox

pytestmark = pytest.mark.azurite

IMPORTS = "POST /v3/activities/contacts_json_import"
TOKEN = "POST /oauth2/default/v1/token"
TOKEN_ERRORS = 4 if SCALE.name == "full" else 2
FAULTS: dict[str, dict[str, Any]] = {
    # One of the first three requests at the latest, then 10 % (a small run sends ~6).
    "http_503": {"http_503": {"rate": 0.10, "by": 3}},
    "connection_resets": {"reset": {"rate": 0.05, "by": 3, "after": False}},
    # The run's first request is an import POST: carried out, its answer lost.
    "lost_answer": {"reset": {"rate": 1, "count": 1, "after": True}},
    "imports_end_failed": {
        "import_failed": {"rate": 0.25, "by": 2},
        "import_timed_out": {"rate": 0.05, "by": 3},
    },
    # The first refresh meets TOKEN_ERRORS errors in a row: at full scale all of its
    # 4 attempts (7 s of backoff; the activity fails, Durable retries it and the next
    # refresh gets through), at small scale 2 (3 s; the client's own retries cope).
    "token_endpoint_errors": {"token_error": {"rate": 1, "count": TOKEN_ERRORS, "status": 503}},
}
SHORT_TOKENS = 1.0  # seconds an access token lives where refreshes are part of the fault


@pytest.fixture(params=SCALE.seeds, ids=lambda seed: f"seed{seed}")
def segment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Segment:
    seed: int = request.param
    return write_segment(tmp_path_factory.mktemp("segment"), SCALE.rows, seed)


@dataclass(frozen=True)
class FaultRun:
    """One run under faults, and the evidence of what it met."""

    rounds: Rounds
    tally: Tally
    met: Met
    """What the sandbox saw of the requests made with the run's tokens."""
    list_id: str

    def sends(self, sandbox: RunningSandbox) -> list[list[str]]:
        """For each import body sent for the run's list: the states of its imports."""
        return [list(body["states"]) for body in sandbox.imports(self.list_id)]

    def silent_resends(self) -> int:
        """API requests aiohttp sent again on its own (an idempotent request whose
        connection was reset, once): the sandbox saw them, the client counted none."""
        return self.met.api_attempts() - self.tally.client()["requests"]


def _run_with(
    sandbox: RunningSandbox,
    azurite: str,
    segment: Segment,
    home: Path,
    pacer: Pacer | None,
    *,
    faults: dict[str, Any],
    aged_tokens: bool = False,
    when_connected: Callable[[str], None] | None = None,
) -> FaultRun:
    list_id = sandbox.create_list()
    refresh_token = connect_locally(sandbox, home, aged=aged_tokens)
    authorization = met(sandbox, refresh_token).authorization
    sandbox.faults(**aimed(authorization, **faults))
    if when_connected is not None:
        when_connected(refresh_token)
    source = upload(segment, azurite, "inbox", f"chaos-{uuid.uuid4().hex[:8]}")
    env = env_for(sandbox, home, azurite)
    run = run_input(source, list_id, options(SCALE.body_bytes))
    tally = Tally()
    try:
        rounds = run_to_the_end(run, lambda: CountingActivities(services_for(env, pacer), tally))
    finally:
        seen = met(sandbox, refresh_token)
        for name, fired in seen.faults.items():
            FIGURES.fault(name, fired)
        FIGURES.fault("throttled_429", seen.throttled)
    check_delivery(sandbox, list_id, segment, rounds.reports())
    return FaultRun(rounds, tally, seen, list_id)


def retried_all_but_give_ups(retries: int, refusals: int) -> bool:
    """The client sent again after each refusal it met, except where it gave up (then
    Durable retried the activity): each give-up takes FAST.attempts refusals in a row."""
    return refusals - refusals // FAST.attempts <= retries <= refusals


def check_met(fault: str, run: FaultRun, sandbox: RunningSandbox) -> None:
    """The fault reached this run (the sandbox's count for its authorization) and the
    run did something about it (its clients' stats, its reports, the import bodies)."""
    seen, client = run.met, run.tally.client()
    reports = run.rounds.reports()
    if fault == "http_503":
        fired = seen.faults["http_503"]
        assert fired >= 1, "no request of this run was answered 503"
        assert seen.answered("503") == fired
        assert retried_all_but_give_ups(client["retries"], fired), (client, fired)
    elif fault == "connection_resets":
        fired = seen.faults["reset"]
        assert fired >= 1, "no connection of this run was reset"
        assert seen.answered("reset") == fired
        silent = run.silent_resends()
        assert 0 <= silent <= fired
        # Each reset was sent again: by aiohttp itself (an idempotent request, once) or
        # by the client after a connection error (a POST: an import sent again).
        assert retried_all_but_give_ups(client["retries"], fired - silent), (client, silent)
        resets_on_imports = seen.answered("reset", [IMPORTS])
        assert client["import_resends"] >= resets_on_imports - resets_on_imports // FAST.attempts
    elif fault == "lost_answer":
        assert seen.faults["reset"] == 1, "the answer of this run's first request was not lost"
        assert seen.answered("reset", [IMPORTS]) == 1, "the lost answer was not an import's"
        assert client["import_resends"] == 1, "the client did not send the import again"
        assert sum(r["requests"]["import_resends"] for r in reports) == 1, "not in the report"
        twice = [states for states in run.sends(sandbox) if len(states) == 2]
        assert len(twice) == 1, "the import whose answer was lost is not imported twice"
        assert twice[0] == ["completed", "completed"]
    elif fault == "imports_end_failed":
        failed, timed_out = seen.faults["import_failed"], seen.faults["import_timed_out"]
        assert failed >= 1, "no import of this run ended failed"
        assert timed_out >= 1, "no import of this run ended timed_out"
        states = [state for body in run.sends(sandbox) for state in body]
        assert (states.count("failed"), states.count("timed_out")) == (failed, timed_out)
        reported = [o["state"] for r in reports for o in r["chunk_outcomes"]]
        assert (reported.count("failed"), reported.count("timed_out")) == (failed, timed_out)
        assert sum(r["chunks"]["import_failed"] for r in reports) == failed + timed_out
        assert len(reports) >= 2, "the failed chunks were not sent again under the same run id"
        assert reports[0]["status"] == "completed_with_errors"
    elif fault == "token_endpoint_errors":
        assert seen.faults["token_error"] == TOKEN_ERRORS, "not every token error was met"
        assert seen.requests[TOKEN].get("503", 0) == TOKEN_ERRORS
        assert seen.requests[TOKEN].get("200", 0) >= 1, "no refresh got through afterwards"
        # Each error cost the run one token request more than the refreshes it got.
        assert run.tally.token_requests - run.tally.refreshes == TOKEN_ERRORS
        assert run.tally.refreshes == seen.requests[TOKEN]["200"]
    else:
        raise AssertionError(f"no evidence check for {fault}")


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_loses_nothing(
    fault: str, chaos_sandbox: RunningSandbox, azurite: str, segment: Segment, tmp_path: Path
) -> None:
    if fault == "token_endpoint_errors":
        chaos_sandbox.settings(access_token_ttl=SHORT_TOKENS)
    tokens = fault == "token_endpoint_errors"  # the first request already needs a refresh
    run = _run_with(
        chaos_sandbox,
        azurite,
        segment,
        tmp_path / "home",
        None,
        faults=FAULTS[fault],
        aged_tokens=tokens,
    )
    check_met(fault, run, chaos_sandbox)


class Bursts:
    """Another client of the same API key, in bursts: 12 requests at once every 1.5 s,
    the first as soon as the watched run has sent its first request (so the run is
    certain to be there when the budget is gone)."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        self.sandbox = sandbox
        self.token = sandbox.access_token()  # an authorization of its own
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def met(self) -> Met:
        return met(self.sandbox, self.token)

    def start(self, run_token: str) -> None:
        self.thread = threading.Thread(
            target=self._burst, args=(run_token,), name="throttling-bursts", daemon=True
        )
        self.thread.start()

    def _burst(self, run_token: str) -> None:
        sandbox = self.sandbox
        while met(sandbox, run_token).api_attempts() == 0:
            if self.stop.wait(0.02):
                return
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not self.stop.is_set():
            for _ in range(12):
                request = urllib.request.Request(
                    f"{sandbox.api_base}/contact_lists?limit=1",
                    headers=sandbox.auth_headers(self.token),
                )
                try:
                    with opener.open(request, timeout=10) as response:
                        response.read()
                except OSError:
                    pass  # 429 is the point
            self.stop.wait(1.5)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=15)


@pytest.fixture
def bursts(chaos_sandbox: RunningSandbox) -> Iterator[Bursts]:
    chaos_sandbox.settings(requests_per_second=4)
    found = Bursts(chaos_sandbox)
    yield found
    found.close()


def check_throttled(run: FaultRun, bursts: Bursts) -> None:
    """The run itself was answered 429 throttled, and its clients backed off each time."""
    assert run.met.throttled >= 1, "no request of this run was throttled"
    assert run.tally.client()["throttled"] == run.met.throttled
    assert bursts.met().throttled >= 1, "the bursts were never throttled"


def test_throttling_bursts_lose_nothing(
    chaos_sandbox: RunningSandbox, azurite: str, segment: Segment, tmp_path: Path, bursts: Bursts
) -> None:
    # The run paces itself as in production (90 % of 4/s); the bursts take the rest.
    pacer = Pacer(4 * PACING_MARGIN)
    run = _run_with(
        chaos_sandbox, azurite, segment, tmp_path / "home", pacer, faults={},
        when_connected=bursts.start,
    )  # fmt: skip
    check_throttled(run, bursts)
    client = run.tally.client()
    assert retried_all_but_give_ups(client["retries"], client["throttled"])


EVERYTHING: dict[str, Any] = {
    "http_503": {"rate": 0.10, "by": 3},
    "http_500": {"rate": 0.02, "by": 4},
    "reset": {"rate": 0.05, "by": 5, "after": False},
    "import_failed": {"rate": 0.10, "by": 2},
    "token_error": {"rate": 0.2, "by": 1, "status": 503},
    "latency": {"rate": 0.05, "by": 6, "seconds": 0.2},
}
"""Each is certain: a run sends at least six API requests that meet no fault (five
imports and a poll at small scale), one import at least and one refresh (aged tokens)."""


def test_every_fault_at_once_loses_nothing(
    chaos_sandbox: RunningSandbox, azurite: str, segment: Segment, tmp_path: Path, bursts: Bursts
) -> None:
    chaos_sandbox.settings(access_token_ttl=2 * SHORT_TOKENS)  # each refresh may back off
    pacer = Pacer(4 * PACING_MARGIN)
    run = _run_with(
        chaos_sandbox, azurite, segment, tmp_path / "home", pacer, faults=EVERYTHING,
        aged_tokens=True, when_connected=bursts.start,
    )  # fmt: skip
    FIGURES.fault("combined_runs")
    seen, client = run.met, run.tally.client()
    assert {name: seen.faults[name] >= 1 for name in EVERYTHING} == dict.fromkeys(EVERYTHING, True)
    assert seen.answered("503") == seen.faults["http_503"]
    assert seen.answered("500") == seen.faults["http_500"]
    assert seen.answered("reset") == seen.faults["reset"]
    check_throttled(run, bursts)
    refusals = (
        seen.faults["http_503"] + seen.faults["http_500"] + seen.faults["reset"]
        - run.silent_resends() + client["throttled"]
    )  # fmt: skip
    assert retried_all_but_give_ups(client["retries"], refusals), (client, refusals)
    assert run.tally.token_requests - run.tally.refreshes == seen.faults["token_error"]
    failed = sum(state == "failed" for body in run.sends(chaos_sandbox) for state in body)
    assert failed == seen.faults["import_failed"]
    reports = run.rounds.reports()
    assert sum(r["chunks"]["import_failed"] for r in reports) == failed
