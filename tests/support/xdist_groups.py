"""Which tests share a pytest-xdist worker under ``make pytest`` (``--dist loadgroup``).

A module runs whole in one worker, so its module-scoped set-up is built once and its
tests never run beside each other; every module of tests/browser/ runs in the same
worker, so two Chromiums never compete for the machine's two cores.

The grouping is the scheduler's own, not xdist_group marks: xdist 3.8 tags marked
tests by rewriting a private node attribute that pytest 9 no longer reads, so marks
would silently group nothing.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

BROWSER = "tests/browser"


def group_of(nodeid: str) -> str:
    """The group of a test by its node id: its module's path, or tests/browser."""
    module = nodeid.split("::", 1)[0]
    return BROWSER if module.startswith(f"{BROWSER}/") else module


class ModuleGroups(LoadScopeScheduling):  # type: ignore[misc]
    """xdist's scope scheduling (a group is sent whole to one worker, the largest
    groups first), with ``group_of`` as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)
