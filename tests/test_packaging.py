"""pyproject.toml's dependencies and the pinned requirements files say the same thing.

The Functions deployment installs requirements.txt; `pip install .` (or `pipx install
'.[cli]'`) reads pyproject.toml. The runtime dependencies of pyproject.toml are exactly
the pins of requirements.txt, and each pin of the ``cli`` extra is the pin of
requirements-dev.txt, so a version bumped in one file alone fails here. The tests over a
temporary copy show that it does, whichever side changes.

Every third-party module that the installed code imports (shared/, functions/, sandbox/,
function_app.py) comes from a declared dependency or from one of theirs, so that
`ccexport` installed with its ``cli`` extra never meets a module only the development
environment has.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import tomllib
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
FILES = ("pyproject.toml", "requirements.txt", "requirements-dev.txt")
EXTRA = "cli"
# What the installed distribution holds (pyproject's [tool.setuptools]).
INSTALLED_CODE = ("shared", "functions", "sandbox", "function_app.py")
OWN_MODULES = frozenset({"shared", "functions", "sandbox", "function_app", "tests", "bench"})


def pins(requirements: Iterable[str], where: str) -> dict[str, str]:
    """``{canonical name: version}`` of requirements that must each be ``name==version``."""
    found: dict[str, str] = {}
    for text in requirements:
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise ValueError(f"{where}: {text!r} is not pinned as name==version")
        name = canonicalize_name(requirement.name)
        if name in found:
            raise ValueError(f"{where}: {requirement.name} is listed twice")
        found[name] = specifiers[0].version
    return found


def requirement_lines(path: Path) -> list[str]:
    """The requirements of a pip requirements file, without comments, blanks and -r."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def project(root: Path) -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return table


def declared(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """pyproject.toml's runtime pins and its ``cli`` extra's pins."""
    table = project(root)
    runtime = table.get("dependencies", [])
    extras = table.get("optional-dependencies", {})
    assert isinstance(runtime, list)
    assert isinstance(extras, dict)
    return (
        pins(runtime, "pyproject.toml dependencies"),
        pins(extras.get(EXTRA, []), f"pyproject.toml optional-dependencies.{EXTRA}"),
    )


def mismatches(root: Path) -> list[str]:
    """Where pyproject.toml and the requirements files under ``root`` disagree."""
    runtime, cli = declared(root)
    deployed = pins(requirement_lines(root / "requirements.txt"), "requirements.txt")
    development = pins(requirement_lines(root / "requirements-dev.txt"), "requirements-dev.txt")
    found: list[str] = []
    for name in sorted(deployed.keys() | runtime.keys()):
        if name not in runtime:
            found.append(f"{name}=={deployed[name]} of requirements.txt is not in dependencies")
        elif name not in deployed:
            found.append(f"{name}=={runtime[name]} of dependencies is not in requirements.txt")
        elif runtime[name] != deployed[name]:
            found.append(
                f"{name}: dependencies pin {runtime[name]}, requirements.txt {deployed[name]}"
            )
    for name, version in sorted(cli.items()):
        if name in deployed:
            found.append(f"{name} of the {EXTRA} extra is a runtime dependency already")
        elif name not in development:
            found.append(f"{name}=={version} of the {EXTRA} extra is not in requirements-dev.txt")
        elif development[name] != version:
            found.append(
                f"{name}: the {EXTRA} extra pins {version}, requirements-dev.txt "
                f"{development[name]}"
            )
    return found


def test_pyproject_pins_what_the_requirements_files_pin() -> None:
    assert mismatches(ROOT) == []


def test_the_distribution_may_not_be_uploaded() -> None:
    classifiers = project(ROOT).get("classifiers", [])
    assert isinstance(classifiers, list)
    assert "Private :: Do Not Upload" in classifiers


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} in {path.name}"
    path.write_text(text.replace(old, new))


def _bump(text: str) -> str:
    """``name==1.2.3`` as ``name==1.2.4``: the last number of the version plus one."""
    return re.sub(r"(\d+)$", lambda m: str(int(m.group(1)) + 1), text)


def _runtime_pin(root: Path) -> str:
    """The first pin of requirements.txt, as written there."""
    return requirement_lines(root / "requirements.txt")[0]


def _cli_pin(root: Path) -> str:
    """The first pin of the cli extra, as written in requirements-dev.txt."""
    name = next(iter(declared(root)[1]))
    return next(
        line
        for line in requirement_lines(root / "requirements-dev.txt")
        if canonicalize_name(Requirement(line).name) == name
    )


def bump_requirements_only(root: Path) -> None:
    pin = _runtime_pin(root)
    _replace(root / "requirements.txt", f"\n{pin}\n", f"\n{_bump(pin)}\n")


def bump_pyproject_only(root: Path) -> None:
    pin = _runtime_pin(root)
    _replace(root / "pyproject.toml", f'"{pin}"', f'"{_bump(pin)}"')


def add_to_requirements_only(root: Path) -> None:
    with (root / "requirements.txt").open("a") as file:
        file.write("six==1.17.0\n")


def drop_from_pyproject_only(root: Path) -> None:
    _replace(root / "pyproject.toml", f'"{_runtime_pin(root)}",', "")


def bump_dev_pin_of_the_extra_only(root: Path) -> None:
    pin = _cli_pin(root)
    _replace(root / "requirements-dev.txt", f"\n{pin}\n", f"\n{_bump(pin)}\n")


def bump_extra_only(root: Path) -> None:
    pin = _cli_pin(root)
    _replace(root / "pyproject.toml", f'"{pin}"', f'"{_bump(pin)}"')


def loosen_a_pin_in_pyproject(root: Path) -> None:
    pin = _runtime_pin(root)
    _replace(root / "pyproject.toml", f'"{pin}"', f'"{pin.replace("==", "~=")}"')


@pytest.mark.parametrize(
    "change",
    [
        bump_requirements_only,
        bump_pyproject_only,
        add_to_requirements_only,
        drop_from_pyproject_only,
        bump_dev_pin_of_the_extra_only,
        bump_extra_only,
    ],
)
def test_a_change_to_one_side_alone_is_found(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    for name in FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    assert mismatches(tmp_path) == []
    change(tmp_path)
    assert mismatches(tmp_path) != []


def test_a_pin_loosened_to_a_range_is_refused(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    loosen_a_pin_in_pyproject(tmp_path)
    with pytest.raises(ValueError, match="not pinned"):
        mismatches(tmp_path)


def imported_modules(paths: Iterable[Path]) -> set[str]:
    """The top-level names of every absolute import in these files or folders."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*.py")))]
    names: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names


def closure(names: Iterable[str]) -> set[str]:
    """These installed distributions and everything they require, unconditionally."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def test_the_installed_code_imports_only_declared_distributions() -> None:
    runtime, cli = declared(ROOT)
    available = closure([*runtime, *cli])
    providers = metadata.packages_distributions()
    third_party = (
        imported_modules(ROOT / p for p in INSTALLED_CODE)
        - set(sys.stdlib_module_names)
        - OWN_MODULES
    )
    undeclared = {
        module: providers.get(module, ["(not installed)"])
        for module in sorted(third_party)
        if not {canonicalize_name(d) for d in providers.get(module, [])} & available
    }
    assert undeclared == {}, "imported, but no dependency of pyproject.toml provides them"
