"""The runtime half of the repository-bounds check: what the pytest process reads.

A user's clone has nothing beside it, so code or a test that reads a sibling of the
repository (a ``shared`` folder beside it, say) works on a developer's machine and fails on a
fresh clone. ``OutsideReads`` records every path that the audit events ``open``,
``os.listdir`` and ``os.scandir`` name (``sys.addaudithook``) and that lies in the
repository's *parent* directory but not in the repository. tests/conftest.py installs
one for the repository and fails the test (and the run) that made such a read;
tests/test_repository_bounds.py is the static half.

Ignored: the temporary directory (pytest's basetemp is under it by default, and a
clone may itself live in /tmp), the Python installation, and hidden entries of the
home directory (tool settings such as ``~/.netrc``, in case the clone sits in $HOME).
If the parent is the filesystem root, nothing can be told apart and nothing is
recorded. Child processes (the sandbox, Azurite, Prism) are not watched.

The hook runs on every audited operation of the process, so it does the least it
can: one set lookup for the event name, then string prefix tests on an absolute path
(no ``realpath``, no system calls beyond ``getcwd`` for a relative path).
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WATCHED_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})


def _dir_prefix(path: str | os.PathLike[str]) -> str:
    """The absolute path with one trailing separator, for prefix tests."""
    text = os.path.abspath(os.fspath(path))
    return text if text.endswith(os.sep) else text + os.sep


class OutsideReads:
    """Collects the paths read beside ``root`` (in its parent, not in it)."""

    def __init__(self, root: str | os.PathLike[str], ignored: Iterable[str] = ()) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._root_prefix = _dir_prefix(self.root)
        parent = os.path.dirname(self.root)
        self._parent = parent
        self._parent_prefix = _dir_prefix(parent)
        self._enabled = parent != os.path.dirname(parent)  # not the filesystem root
        self._ignored: tuple[str, ...] = ()
        self._home = _dir_prefix(os.path.expanduser("~"))
        self.found: list[str] = []
        for path in ignored:
            self.ignore(path)

    def ignore(self, path: str | os.PathLike[str]) -> None:
        """Never record paths under ``path`` (e.g. a --basetemp outside the temp dir)."""
        prefix = _dir_prefix(path)
        if prefix not in self._ignored:
            self._ignored = (*self._ignored, prefix)

    def check(self, path: object) -> None:
        """Record ``path`` if it lies beside the repository (str, bytes or PathLike)."""
        if not self._enabled or isinstance(path, int):  # an int is a file descriptor
            return
        try:
            text = os.fsdecode(path)  # type: ignore[arg-type]  # anything else: TypeError
        except TypeError:
            return
        full = os.path.abspath(text)
        if full != self._parent and not full.startswith(self._parent_prefix):
            return
        if full == self.root or full.startswith(self._root_prefix):
            return
        if full.startswith(self._ignored):
            return
        if full.startswith(self._home) and full[len(self._home) :].startswith("."):
            return
        if full not in self.found:
            self.found.append(full)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        """The audit hook proper; never raises (that would break the audited call)."""
        if event in WATCHED_EVENTS and args:
            with contextlib.suppress(Exception):  # a guard must not break what it watches
                self.check(args[0])


def default_ignored() -> list[str]:
    """The temp directory and the Python installation (venv, base prefix, site dirs)."""
    paths = {tempfile.gettempdir(), sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in ("purelib", "platlib", "stdlib", "platstdlib"):
        location = sysconfig.get_paths().get(name)
        if location:
            paths.add(location)
    return sorted(paths)


_active: list[OutsideReads] = []
_hooked = False


def _dispatch(event: str, args: tuple[Any, ...]) -> None:
    if event in WATCHED_EVENTS:
        for checker in _active:
            checker.hook(event, args)


def install(checker: OutsideReads) -> OutsideReads:
    """Watch this process's reads with ``checker`` from now on (audit hooks stay)."""
    global _hooked  # noqa: PLW0603 - one audit hook per process, added once
    if not _hooked:
        sys.addaudithook(_dispatch)
        _hooked = True
    if checker not in _active:
        _active.append(checker)
    return checker


def installed() -> list[OutsideReads]:
    return list(_active)


@contextmanager
def watching(checker: OutsideReads) -> Iterator[OutsideReads]:
    """``checker`` sees this process's reads inside the block only (for tests of the guard)."""
    install(checker)
    try:
        yield checker
    finally:
        _active.remove(checker)


def report(paths: Iterable[str], root: str | os.PathLike[str]) -> str:
    """What the failure says: each path read beside the repository."""
    listed = "\n".join(f"  {path}" for path in paths)
    return (
        f"read outside the repository {Path(root)} (a fresh clone has nothing beside it; "
        f"keep what the code and tests need inside the repository):\n{listed}"
    )
