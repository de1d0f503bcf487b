"""make pytest's worker groups (tests/support/xdist_groups.py): a module whole, the
browser modules together, and the scheduler xdist is given uses exactly that."""

from __future__ import annotations

import pytest

from tests.conftest import pytest_xdist_make_scheduler
from tests.support.xdist_groups import BROWSER, ModuleGroups, group_of


@pytest.mark.parametrize(
    ("nodeid", "group"),
    [
        ("tests/test_serve.py::test_serve_stops_cleanly[2]", "tests/test_serve.py"),
        ("tests/test_serve.py::test_a_run_started_over_http", "tests/test_serve.py"),
        ("tests/chaos/test_faults.py::test_every_fault[seed1]", "tests/chaos/test_faults.py"),
        ("tests/test_x.py::Class::test_y[a::b@c]", "tests/test_x.py"),
        ("tests/browser/test_console_runs.py::test_a_run_is_followed_live", BROWSER),
        ("tests/browser/test_console_flow.py::test_a_new_user", BROWSER),
        ("tests/browser_like.py::test_z", "tests/browser_like.py"),
    ],
)  # fmt: skip
def test_a_test_s_group_is_its_module_or_the_browser_tests(nodeid: str, group: str) -> None:
    assert group_of(nodeid) == group


def test_the_scheduler_splits_work_by_those_groups() -> None:
    scheduler = ModuleGroups.__new__(ModuleGroups)  # its scope only: no workers needed
    one, other = "tests/browser/test_a.py::test_1", "tests/browser/test_b.py::test_2"
    assert scheduler._split_scope(one) == scheduler._split_scope(other) == BROWSER
    assert scheduler._split_scope("tests/test_a.py::test_1") == "tests/test_a.py"


def test_only_loadgroup_gets_the_groups(pytestconfig: pytest.Config) -> None:
    # Outside xdist (dist "no", or absent) xdist's own scheduler choice stands.
    assert pytest_xdist_make_scheduler(pytestconfig, log=None) is None
