"""Nothing in the repository reaches outside it: a user's clone has nothing beside it.

The static half: every tracked file (``git ls-files``) under the code folders, and the
top-level build files, markdown excluded, is scanned for references that escape the
repository, each reported as ``file:line``:

- a relative path whose ``..`` segments climb above the repository root. A bare path
  is taken both from the root (where make and pytest run) and from the file's folder;
  one behind a variable (``$here`` and then ``..``) from the file's folder; Bicep paths, which
  are file-relative by definition, from the file's folder only;
- in Python (read by its syntax tree): a chain of ``.parent``, ``.parents[n]``,
  ``os.path.dirname``, ``/`` and ``os.path.join`` on ``__file__`` or on a root
  (``ROOT``, ``PROJECT_ROOT``, a module name bound to such a chain) that climbs above
  the root, e.g. ``ROOT.parent / "shared"``;
- the names of the reference folder that sits beside the repository on the
  developers' machines (the official Constant Contact spec files), the old
  environment variable that pointed at it, and the absolute path of the repository's
  parent folder.

The runtime half, a guard on what the pytest process opens, is tests/support/repository_guard.py
(installed by tests/conftest.py); both are proven below on a fake repository in a
temporary folder, never beside the real one.
"""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import tempfile
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tests.support import repository_guard
from tests.support.services import ROOT

SCANNED_DIRS = ("shared", "functions", "sandbox", "bench", "tests", "infra", ".ci")
SCANNED_FILES = ("Makefile", "function_app.py", "package.json", "pyproject.toml")
FILE_RELATIVE_SUFFIXES = frozenset({".bicep", ".bicepparam"})

# The reference folder beside the repository and what used to point at it. Written so
# that this file does not name them itself (the character classes break the match).
FORBIDDEN_NAMES = re.compile(
    r"constant-contac[t]/(?:swagger\.yaml|openapi\.yaml|FACTS\.md|ORIGIN\.md)"
    r"|shared/constant-contac[t]\b"
    r"|CCEXPORT_CC_SPE[C]"
)

# (file, text on the line): why it is not a read outside the repository.
ALLOWED = {
    ("tests/test_catalog.py", '"prefix": "..'): "a prefix the catalog must refuse; never opened",
}

ROOT_NAMES = re.compile(r"(?:^|_)ROOT$|^REPO(?:_|$)")
PATH_WRAPPERS = frozenset(
    {"Path", "PurePath", "PurePosixPath", "PosixPath", "str", "fspath", "abspath", "realpath",
     "normpath", "expanduser"}
)  # fmt: skip
PATH_METHODS = frozenset({"resolve", "absolute", "expanduser"})
TOKEN = re.compile(r"[^\s'\"`(),;=<>|&\[\]]+")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.why}: {self.text.strip()[:160]}"


# --- which files --------------------------------------------------------------------------


def scanned_files(root: Path) -> list[str]:
    """Tracked files in the scanned folders and top-level files, markdown excluded."""
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--", *SCANNED_DIRS, *SCANNED_FILES],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(name for name in listed.split("\0") if name and not name.endswith(".md"))


# --- path arithmetic: levels below the root ---------------------------------------------


def _climb(level: int, text: str) -> tuple[int, int]:
    """(final level, lowest level) after walking the path segments of ``text``."""
    lowest = level
    for segment in re.split(r"[/\\]", text):
        if segment in ("", "."):
            continue
        level += -1 if segment == ".." else 1
        lowest = min(lowest, level)
    return level, lowest


def _escapes_as_text(token: str, depth: int, file_relative: bool) -> bool:
    """Whether a path token in text climbs above the root.

    ``depth``: the level of the file's folder below the root. A token counts as a path
    only with a separator next to its ``..`` (a lone ``..`` is prose or a comparison).
    """
    if ".." not in re.split(r"[/\\]", token):
        return False
    if not re.search(r"\.\.[/\\]|[/\\]\.\.", token):
        return False
    first = re.split(r"[/\\]", token).index("..")
    prefix = "/".join(re.split(r"[/\\]", token)[:first])
    if token.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", token) or "://" in token:
        return False  # absolute: the parent-path rule covers those
    if any(mark in prefix for mark in "$%{"):  # behind a variable: taken as the file's folder
        bases = [depth]
        token = token[token.index("..") :]
    else:
        bases = [depth] if file_relative else [0, depth]
    return any(_climb(base, token)[1] < 0 for base in bases)


# --- Python, by its syntax tree -------------------------------------------------------


class _PythonPaths:
    """Levels of path expressions in one module; lower than 0 is outside the root."""

    def __init__(self, tree: ast.Module, file_level: int) -> None:
        self.file_level = file_level
        self.names: dict[str, int] = {}
        self.used: set[int] = set()  # string constants that took part in an expression
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            found = self.level(value)
            if isinstance(target, ast.Name) and found is not None:
                self.names[target.id] = found[0]

    def _join(
        self, base: tuple[int, int] | None, parts: Iterable[ast.expr]
    ) -> tuple[int, int] | None:
        """``base`` joined with ``parts``; a part that is not a string counts as one name."""
        if base is None:
            return None
        level, lowest = base
        for part in parts:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                self.used.add(id(part))
                level, low = _climb(level, part.value)
                lowest = min(lowest, low)
            else:
                level += 1
        return level, lowest

    def level(self, node: ast.expr) -> tuple[int, int] | None:
        """(final, lowest) level of a path expression, or None if it is not one."""
        if isinstance(node, ast.Name | ast.Constant):
            return self._leaf(node)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            return _up(self.level(node.value), 1)
        if isinstance(node, ast.Subscript):
            return self._parents(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self._join(self.level(node.left), [node.right])
        if isinstance(node, ast.Call):
            return self._call(node)
        return None

    def _leaf(self, node: ast.Name | ast.Constant) -> tuple[int, int] | None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, str):
                return None
            self.used.add(
                id(node)
            )  # Path(<a string>) is taken from the working directory, the root
            return _climb(0, node.value)
        if node.id == "__file__":
            return self.file_level, self.file_level
        if node.id in self.names:
            return self.names[node.id], self.names[node.id]
        return (0, 0) if ROOT_NAMES.search(node.id) else None

    def _parents(self, node: ast.Subscript) -> tuple[int, int] | None:
        """``x.parents[k]``: k + 1 folders up."""
        if (
            isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, int)
        ):
            return _up(self.level(node.value.value), node.slice.value + 1)
        return None

    def _call(self, node: ast.Call) -> tuple[int, int] | None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if isinstance(func, ast.Attribute) and name in PATH_METHODS and not node.args:
            return self.level(func.value)
        if isinstance(func, ast.Attribute) and name == "joinpath":
            return self._join(self.level(func.value), node.args)
        if not node.args:
            return None
        if name == "dirname":
            return _up(self.level(node.args[0]), 1)
        if name in PATH_WRAPPERS or name == "join":
            return self._join(self.level(node.args[0]), node.args[1:])
        return None


def _up(found: tuple[int, int] | None, count: int) -> tuple[int, int] | None:
    if found is None:
        return None
    level = found[0] - count
    return level, min(found[1], level)


def _python_findings(rel: str, text: str) -> Iterator[tuple[int, str]]:
    depth = len(PurePosixPath(rel).parts) - 1
    tree = ast.parse(text)
    paths = _PythonPaths(tree, file_level=depth + 1)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Subscript | ast.BinOp | ast.Call):
            found = paths.level(node)
            if found is not None and found[1] < 0:
                yield node.lineno, "climbs above the repository root"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in paths.used
        ):
            for number, line in enumerate(node.value.splitlines(), start=node.lineno):
                # A bare relative path in Python is relative to the working directory.
                if any(_escapes_as_text(t, 0, False) for t in TOKEN.findall(line)):
                    yield number, "a relative path above the repository root"
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT and any(
            _escapes_as_text(t, depth, False) for t in TOKEN.findall(token.string)
        ):
            yield token.start[0], "a relative path above the repository root"


# --- every file -------------------------------------------------------------------------


def scan(root: Path, files: Iterable[str]) -> list[Finding]:
    """Every reference in ``files`` (relative to ``root``) that escapes ``root``."""
    parent = str(root.resolve().parent)
    check_parent = parent not in ("/", tempfile.gettempdir()) and len(Path(parent).parts) > 1
    own = f"{parent}/{root.resolve().name}"
    findings: dict[tuple[str, int], Finding] = {}
    for rel in files:
        path = root / rel
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary, deleted in the working tree, or a submodule
        lines = text.splitlines()
        depth = len(PurePosixPath(rel).parts) - 1

        def add(number: int, why: str, rel: str = rel, lines: list[str] = lines) -> None:
            line = lines[number - 1] if 0 < number <= len(lines) else ""
            if any(rel == name and snippet in line for name, snippet in ALLOWED):
                return
            findings.setdefault((rel, number), Finding(rel, number, line, why))

        for number, line in enumerate(lines, start=1):
            if FORBIDDEN_NAMES.search(line):
                add(number, "names the reference folder beside the repository")
            if check_parent and parent + "/" in line.replace(own, ""):
                add(number, "an absolute path in the repository's parent folder")
        if rel.endswith(".py"):
            try:
                for number, why in _python_findings(rel, text):
                    add(number, why)
            except SyntaxError as exc:
                add(exc.lineno or 1, "not valid Python")
            continue
        file_relative = PurePosixPath(rel).suffix in FILE_RELATIVE_SUFFIXES
        for number, line in enumerate(lines, start=1):
            if any(_escapes_as_text(t, depth, file_relative) for t in TOKEN.findall(line)):
                add(number, "a relative path above the repository root")
    return sorted(findings.values(), key=lambda f: (f.path, f.line))


# --- the tests -----------------------------------------------------------------------------


def test_nothing_in_the_repository_reaches_outside_it() -> None:
    files = scanned_files(ROOT)
    assert "tests/conftest.py" in files
    assert all(name in files for name in SCANNED_FILES if (ROOT / name).exists())
    findings = scan(ROOT, files)
    assert not findings, "references outside the repository:\n" + "\n".join(map(str, findings))


def _fake_repository(base: Path) -> Path:
    """A repository in a temporary folder with one of each violation (and lookalikes)."""
    root = base / "work" / "repo"
    up = ".."  # assembled below, so that this file holds no such path itself
    spec = "constant-contact" + "/swagger.yaml"
    files = {
        "tests/helpers.py": [
            "from pathlib import Path",
            "import os",
            "ROOT = Path(__file__).resolve().parent.parent",  # 2 fine: the root
            "OUT = Path(__file__).resolve().parent.parent.parent",  # 4
            "SPEC = ROOT.parent / 'shared'",  # 5
            f"NOTES = open('{up}/shared/notes.txt')",  # 6
            f"# see {up}/shared/notes.txt",  # 7
            "HERE = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))",  # 8
            f"FINE = ROOT / 'a' / '{up}' / 'b'",  # 9 fine
            f"SPEC_FILE = '{spec}'",  # 10
            f"ABOVE = ROOT / 'tests' / '{up}' / '{up}' / 'x'",  # 11
            "DEEP = Path(__file__).parents[2]",  # 12
            "OK = Path(__file__).parents[1]",  # 13 fine
            f"ABS = '{base / 'work' / 'shared'}'",  # 14
            f"UP = Path('{up}')",  # 15
            f"if '{up}' in name or part in ('.', '{up}'): pass",  # 16 fine: a comparison
        ],
        "Makefile": ["spec:", f"\tcat {up}/shared/x.yaml", f"\tcat docs/{up}/README.md"],
        "infra/scripts/deploy.sh": [
            'here="$(dirname "$0")"',
            f'template="$here/{up}/main.bicep"',  # 2 fine: infra/main.bicep
            f'other="$here/{up}/{up}/{up}/outside"',  # 3
        ],
        "infra/main.bicep": [
            f"module m '{up}/modules/x.bicep' = {{",
            f"module n '{up}/{up}/y' = {{",
        ],
        "README.md": [f"see {up}/shared/FACTS.md"],  # markdown: not scanned
    }
    for rel, lines in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(lines) + "\n")
    return root


def test_the_scan_catches_each_kind_of_escape(tmp_path: Path) -> None:
    root = _fake_repository(tmp_path)
    files = ["tests/helpers.py", "Makefile", "infra/scripts/deploy.sh", "infra/main.bicep"]
    found = {(f.path, f.line) for f in scan(root, files)}
    assert found == {
        ("tests/helpers.py", 4),
        ("tests/helpers.py", 5),
        ("tests/helpers.py", 6),
        ("tests/helpers.py", 7),
        ("tests/helpers.py", 8),
        ("tests/helpers.py", 10),
        ("tests/helpers.py", 11),
        ("tests/helpers.py", 12),
        ("tests/helpers.py", 14),
        ("tests/helpers.py", 15),
        ("Makefile", 2),
        ("infra/scripts/deploy.sh", 3),
        ("infra/main.bicep", 2),
    }
    message = "\n".join(map(str, scan(root, ["Makefile"])))
    assert message.startswith("Makefile:2: a relative path above the repository root:")


def test_the_runtime_guard_catches_a_sibling_read(tmp_path: Path) -> None:
    """Real reads through the audit hook, on a fake root: a sibling file and folder are
    recorded; the repository itself and the ignored folders are not."""
    parent = tmp_path / "work"
    root = parent / "repo"
    sibling = parent / "shared"
    scratch = parent / "scratch"
    for folder in (root, sibling, scratch):
        folder.mkdir(parents=True)
    (sibling / "notes.txt").write_text("outside")
    (root / "inside.txt").write_text("inside")
    (scratch / "temp.txt").write_text("ignored")
    checker = repository_guard.OutsideReads(root, ignored=[str(scratch)])
    with repository_guard.watching(checker):
        assert (sibling / "notes.txt").read_text() == "outside"
        assert (root / "inside.txt").read_text() == "inside"
        assert (scratch / "temp.txt").read_text() == "ignored"
        assert os.listdir(sibling) == ["notes.txt"]
        assert [entry.name for entry in os.scandir(root)] == ["inside.txt"]
    assert checker.found == [str(sibling / "notes.txt"), str(sibling)]
    (sibling / "notes.txt").read_text()  # no longer watched by this checker
    assert len(checker.found) == 2
    message = repository_guard.report(checker.found, root)
    assert str(sibling / "notes.txt") in message


def test_the_runtime_guard_ignores_the_temp_dir_and_a_root_parent(tmp_path: Path) -> None:
    checker = repository_guard.OutsideReads(tmp_path / "repo", ignored=[str(tmp_path)])
    checker.check(tmp_path / "elsewhere.txt")
    checker.check(str(tmp_path / "repo" / "x"))
    checker.check(3)  # a file descriptor
    on_root = repository_guard.OutsideReads("/repo")  # its parent is "/": nothing to tell apart
    on_root.check("/etc/hostname")
    assert checker.found == []
    assert on_root.found == []


def test_the_runtime_guard_watches_this_run() -> None:
    """tests/conftest.py installed a guard for the repository with the temp dir ignored."""
    guards = [g for g in repository_guard.installed() if g.root == str(ROOT)]
    assert len(guards) == 1
    guards[0].check(tempfile.gettempdir() + "/a-file")
    assert tempfile.gettempdir() + "/a-file" not in guards[0].found
