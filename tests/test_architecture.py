"""The architecture holds: rooms that import one way, no cycles, a map that is true.

The import contract lives in pyproject.toml ([tool.importlinter]) and is checked here
with import-linter, so `make test` fails on a new cycle or an upward import. The
checker is shown to catch a planted cycle and a planted upward import on a copy of
the code, so a contract that silently checks nothing would fail too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_TOP_LEVEL_MODULES = 8


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the code at ``root`` (its own copy of the packages first)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    found: list[dict[str, object]] = config["contracts"]
    return found


def rooms() -> list[str]:
    """shared's sub-packages and top-level modules, as dotted names."""
    names = [f"shared.{p.name}" for p in SHARED.iterdir() if (p / "__init__.py").is_file()]
    names += [f"shared.{p.stem}" for p in SHARED.glob("*.py") if p.stem != "__init__"]
    return sorted(names)


def test_the_import_contract_is_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_room_of_shared_has_its_place_in_the_layers() -> None:
    """A new package or top-level module cannot escape the one-way rule unnoticed."""
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    assert isinstance(layers, list)
    assert sorted(layers) == rooms()


def test_shared_has_few_modules_at_its_top_level() -> None:
    modules = [p.name for p in SHARED.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def test_every_package_says_what_it_owns() -> None:
    for init in [*SHARED.glob("*/__init__.py"), *SHARED.glob("*/*/__init__.py")]:
        text = init.read_text()
        assert text.startswith('"""'), init
        assert len(text.split("\n")) >= 3, init


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages and the contract, copied, to plant bad imports in."""
    root = tmp_path_factory.mktemp("planted")
    for name in ("shared", "functions"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def plant(module: Path, line: str) -> str:
    """Add an import inside a function (those count too); returns the original text."""
    original = module.read_text()
    module.write_text(original + f"\n\ndef _planted() -> None:\n    {line}  # noqa\n")
    return original


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a cycle inside one room: the layout importing the inbox, which imports it
        ("shared/segments/layout.py", "from shared.segments import inbox", "acyclic"),
        # an upward import: storage reaching up to the runs
        ("shared/storage/files.py", "from shared.runs import contract", "one way"),
        # the core reaching the function app
        ("shared/runs/index.py", "import functions.services", "function app"),
    ],
)
def test_a_planted_cycle_or_upward_import_breaks_the_contract(
    copy: Path, module: str, line: str, broken: str
) -> None:
    path = copy / module
    original = plant(path, line)
    try:
        done = lint_imports(copy)
    finally:
        path.write_text(original)
    assert done.returncode != 0, done.stdout
    assert "BROKEN" in done.stdout
    names = {"acyclic": "no cycles", "one way": "import one way", "function app": "function app"}
    assert re.search(names[broken] + r".*BROKEN", done.stdout), done.stdout
    assert lint_imports(copy).returncode == 0  # the copy is whole again


# --- docs/ARCHITECTURE.md is the map: what it names exists -----------------------------

ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
CODE_PATH = re.compile(
    r"`((?:shared|functions|tests|bench|sandbox|infra)/[\w./-]*|function_app\.py)`"
)


def test_the_architecture_names_only_what_exists() -> None:
    text = ARCHITECTURE.read_text()
    named = set(CODE_PATH.findall(text))
    assert len(named) > 20  # the map names its modules
    missing = sorted(p for p in named if not (ROOT / p.rstrip("/")).exists())
    assert missing == []


def test_the_architecture_describes_every_room_in_its_order() -> None:
    text = ARCHITECTURE.read_text()
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    assert isinstance(layers, list)
    order = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    positions = [order.find(f"`{name.replace('.', '/')}") for name in layers]
    assert -1 not in positions, [n for n, p in zip(layers, positions, strict=True) if p == -1]
    assert positions == sorted(positions)  # the table lists the rooms top to bottom
