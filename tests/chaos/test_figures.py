"""The figures of pytest-xdist's workers add up in the controller to what one process
would have counted (tests/conftest.py hands them over with ``to_json``/``merge``)."""

from __future__ import annotations

import json

from tests.chaos.figures import Figures


def _filled(runs: int, most: int, name: str) -> Figures:
    figures = Figures()
    figures.fault("reset", 2)
    figures.fault(name)
    figures.run(runs)
    figures.delivery(expected=100 * runs, lost=0, chunks=3 * runs, twice=1, most=most)
    figures.bad_input(f"prepare:{name}")
    figures.security(f"checked {name}")
    figures.trigger_deliveries += runs
    figures.covered_elsewhere[:] = ["tests/test_x.py::test_y"]
    return figures


def test_two_workers_figures_add_up_to_one_process_s() -> None:
    controller = Figures()
    for worker in (_filled(2, most=2, name="a"), _filled(3, most=1, name="b")):
        controller.merge(json.loads(json.dumps(worker.to_json())))  # as execnet carries it

    assert controller.faults == {"reset": 4, "a": 1, "b": 1}
    assert (controller.runs, controller.contacts_expected, controller.chunks) == (5, 500, 15)
    assert (controller.chunks_sent_twice, controller.most_sends_of_one_chunk) == (2, 2)
    assert controller.trigger_deliveries == 5
    assert controller.bad_inputs == ["prepare:a", "prepare:b"]
    assert controller.security_checks == ["checked a", "checked b"]
    assert controller.covered_elsewhere == ["tests/test_x.py::test_y"]  # once, not twice
    assert "security checks       2 here, 1 in other test files" in controller.lines("small")


def test_a_worker_that_ran_no_chaos_test_changes_nothing() -> None:
    controller = _filled(1, most=1, name="a")
    before = controller.to_json()
    controller.merge(Figures().to_json())
    assert controller.to_json() == before
