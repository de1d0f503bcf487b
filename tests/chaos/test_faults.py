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

Key Vault errors and a killed process have tests of their own (test_keyvault.py,
test_kill.py).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.pacing import Pacer
from shared.run_activities import PACING_MARGIN, RunActivities
from tests.chaos.conftest import count_faults
from tests.chaos.figures import FIGURES
from tests.chaos.promises import (
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
from tests.sandbox_service import RunningSandbox

pytestmark = pytest.mark.azurite

TOKEN_ERRORS = 4 if SCALE.name == "full" else 2
LOST_ANSWER = {"reset": {"rate": 1, "count": 1, "after": True}}
FAULTS: dict[str, dict[str, Any]] = {
    "http_503": {"http_503": 0.10},
    "connection_resets": {"reset": {"rate": 0.05, "after": False}},
    "lost_answer": LOST_ANSWER,
    "imports_end_failed": {"import_failed": 0.25, "import_timed_out": 0.05},
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


def _run_with(
    sandbox: RunningSandbox,
    azurite: str,
    segment: Segment,
    home: Path,
    pacer: Pacer | None,
    *,
    aged_tokens: bool = False,
) -> None:
    list_id = sandbox.create_list()
    connect_locally(sandbox, home, aged=aged_tokens)
    source = upload(segment, azurite, "inbox", f"chaos-{uuid.uuid4().hex[:8]}")
    env = env_for(sandbox, home, azurite)
    run = run_input(source, list_id, options(SCALE.body_bytes))
    before = sandbox.stats()
    try:
        rounds = run_to_the_end(run, lambda: RunActivities(services_for(env, pacer)))
    finally:
        count_faults(sandbox, before)
    check_delivery(sandbox, list_id, segment, rounds.reports())


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_loses_nothing(
    fault: str, chaos_sandbox: RunningSandbox, azurite: str, segment: Segment, tmp_path: Path
) -> None:
    before_token_errors = chaos_sandbox.stats()["faults"]["token_error"]
    if fault == "token_endpoint_errors":
        chaos_sandbox.settings(access_token_ttl=SHORT_TOKENS)
    chaos_sandbox.faults(**FAULTS[fault])
    tokens = fault == "token_endpoint_errors"  # the first request already needs a refresh
    _run_with(chaos_sandbox, azurite, segment, tmp_path / "home", None, aged_tokens=tokens)
    fired = chaos_sandbox.stats()["faults"]
    if fault == "token_endpoint_errors":
        assert fired["token_error"] - before_token_errors == TOKEN_ERRORS, (
            "every token error was met"
        )


@pytest.fixture
def bursts(chaos_sandbox: RunningSandbox) -> Iterator[None]:
    """Another client of the same API key, in bursts: 12 requests at once every 1.5 s."""
    token = chaos_sandbox.access_token()
    stop = threading.Event()

    def burst() -> None:
        import urllib.request  # noqa: PLC0415

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not stop.is_set():
            for _ in range(12):
                request = urllib.request.Request(
                    f"{chaos_sandbox.api_base}/contact_lists?limit=1",
                    headers=chaos_sandbox.auth_headers(token),
                )
                try:
                    with opener.open(request, timeout=10) as response:
                        response.read()
                except OSError:
                    pass  # 429 is the point
            stop.wait(1.5)

    thread = threading.Thread(target=burst, name="throttling-bursts", daemon=True)
    chaos_sandbox.settings(requests_per_second=4)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=15)


@pytest.mark.usefixtures("bursts")
def test_throttling_bursts_lose_nothing(
    chaos_sandbox: RunningSandbox, azurite: str, segment: Segment, tmp_path: Path
) -> None:
    # The run paces itself as in production (80 % of 4/s); the bursts take the rest.
    pacer = Pacer(4 * PACING_MARGIN)
    _run_with(chaos_sandbox, azurite, segment, tmp_path / "home", pacer)
    assert chaos_sandbox.stats()["throttled"] > 0, "the bursts should have been throttled"


@pytest.mark.usefixtures("bursts")
def test_every_fault_at_once_loses_nothing(
    chaos_sandbox: RunningSandbox, azurite: str, segment: Segment, tmp_path: Path
) -> None:
    chaos_sandbox.settings(access_token_ttl=2 * SHORT_TOKENS)  # each refresh may back off
    chaos_sandbox.faults(
        http_503=0.10,
        http_500=0.02,
        reset={"rate": 0.05, "after": False},
        import_failed=0.10,
        token_error={"rate": 0.2, "status": 503},
        latency={"rate": 0.05, "seconds": 0.2},
    )
    pacer = Pacer(4 * PACING_MARGIN)
    _run_with(chaos_sandbox, azurite, segment, tmp_path / "home", pacer, aged_tokens=True)
    FIGURES.fault("combined_runs")
