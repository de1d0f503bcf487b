"""pyproject.toml, the requirements inputs and the lock files say the same thing.

The pins people edit are requirements.in (the function app's direct runtime
dependencies) and requirements-dev.in (development); `make lock` resolves them into
requirements.txt and requirements-dev.txt, the whole trees, each package pinned with its
hashes. The Functions deployment installs requirements.txt, `make install`
requirements-dev.txt; `pip install .` (or `pipx install '.[cli]'`) reads pyproject.toml.

- pyproject.toml's runtime dependencies are exactly the pins of requirements.in, and each
  pin of the ``cli`` extra is the pin of requirements-dev.in;
- every package of a lock file is pinned ``name==version`` with at least one sha256 hash,
  and every pin of its input is there at the same version;
- requirements-dev.txt holds the whole runtime tree at requirements.txt's versions;
- each lock file holds exactly the tree its inputs need (read, offline, from the metadata
  of the installed distributions, which are the locked versions), and names `make lock`
  as the command that wrote it.

So a version changed in one file alone, or an input edited without `make lock`, fails
here. The tests over a temporary copy show that it does, whichever side changes.

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
RUNTIME_IN, RUNTIME_LOCK = "requirements.in", "requirements.txt"
DEV_IN, DEV_LOCK = "requirements-dev.in", "requirements-dev.txt"
FILES = ("pyproject.toml", RUNTIME_IN, RUNTIME_LOCK, DEV_IN, DEV_LOCK)
EXTRA = "cli"
LOCK_COMMAND = "make lock"
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
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
    """The requirements of a pip requirements file, without comments, blanks, -r and -c."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def locked(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a lock file, whose every entry must be
    ``name==version`` followed by its ``--hash=sha256:`` options, and nothing else."""
    entries = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    requirements: list[str] = []
    for entry in (re.sub(r"(^|\s)#.*$", "", line).strip() for line in entries):
        if not entry:
            continue
        requirement, *options = re.split(r"\s+(?=--)", entry)
        if requirement.startswith("-"):
            raise ValueError(f"{path.name}: {entry!r}: a lock file holds requirements only")
        if not options:
            raise ValueError(f"{path.name}: {requirement!r} has no --hash=sha256:")
        for option in options:
            if not HASH.fullmatch(option):
                raise ValueError(f"{path.name}: {requirement!r}: {option!r} is no sha256 hash")
        requirements.append(requirement)
    return pins(requirements, path.name)


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


def _missing_from_lock(
    wanted: dict[str, str], source: str, lock: dict[str, str], lock_name: str
) -> list[str]:
    found: list[str] = []
    for name, version in sorted(wanted.items()):
        if name not in lock:
            found.append(f"{name}=={version} of {source} is not in {lock_name}")
        elif lock[name] != version:
            found.append(f"{name}: {source} pins {version}, {lock_name} {lock[name]}")
    return found


def mismatches(root: Path) -> list[str]:
    """Where pyproject.toml, the inputs and the lock files under ``root`` disagree."""
    runtime, cli = declared(root)
    direct = pins(requirement_lines(root / RUNTIME_IN), RUNTIME_IN)
    development = pins(requirement_lines(root / DEV_IN), DEV_IN)
    deployed = locked(root / RUNTIME_LOCK)
    developed = locked(root / DEV_LOCK)
    found: list[str] = []
    for name in sorted(direct.keys() | runtime.keys()):
        if name not in runtime:
            found.append(f"{name}=={direct[name]} of {RUNTIME_IN} is not in dependencies")
        elif name not in direct:
            found.append(f"{name}=={runtime[name]} of dependencies is not in {RUNTIME_IN}")
        elif runtime[name] != direct[name]:
            found.append(f"{name}: dependencies pin {runtime[name]}, {RUNTIME_IN} {direct[name]}")
    found += _missing_from_lock(direct, RUNTIME_IN, deployed, RUNTIME_LOCK)
    found += _missing_from_lock(development, DEV_IN, developed, DEV_LOCK)
    # The development environment runs the deployed tree, at the deployed versions.
    found += _missing_from_lock(deployed, RUNTIME_LOCK, developed, DEV_LOCK)
    for name, version in sorted(cli.items()):
        if name in direct:
            found.append(f"{name} of the {EXTRA} extra is a runtime dependency already")
        elif name not in development:
            found.append(f"{name}=={version} of the {EXTRA} extra is not in {DEV_IN}")
        elif development[name] != version:
            found.append(f"{name}: the {EXTRA} extra pins {version}, {DEV_IN} {development[name]}")
    return found


def test_pyproject_the_inputs_and_the_locks_pin_the_same_versions() -> None:
    assert mismatches(ROOT) == []


def test_the_locks_name_the_command_that_writes_them() -> None:
    for name in (RUNTIME_LOCK, DEV_LOCK):
        header = (ROOT / name).read_text().splitlines()[:2]
        assert header == [
            "# This file was autogenerated by uv via the following command:",
            f"#    {LOCK_COMMAND}",
        ], name


def needed(requirements: Iterable[str]) -> set[str]:
    """The installed distributions these requirements need on this interpreter: their
    own, and what those require, with the extras asked for, transitively."""
    found: set[str] = set()
    done: set[tuple[str, str]] = set()
    todo = [
        (canonicalize_name(requirement.name), extra)
        for requirement in map(Requirement, requirements)
        for extra in ("", *requirement.extras)
    ]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        found.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker.evaluate({"extra": extra}) if marker else extra == "":
                wanted = canonicalize_name(requirement.name)
                todo += [(wanted, more) for more in ("", *requirement.extras)]
    return found


def test_the_venv_holds_the_locked_versions() -> None:
    """`make install` installed requirements-dev.txt: what the tests run is the lock."""
    installed = {name: metadata.version(name) for name in locked(ROOT / DEV_LOCK)}
    assert installed == locked(ROOT / DEV_LOCK)


@pytest.mark.parametrize(
    ("lock", "inputs"), [(RUNTIME_LOCK, (RUNTIME_IN,)), (DEV_LOCK, (RUNTIME_IN, DEV_IN))]
)
def test_each_lock_holds_exactly_the_tree_of_its_inputs(lock: str, inputs: tuple[str, ...]) -> None:
    """Offline, that the lock is up to date with its inputs: a pin added to or dropped
    from a .in file without `make lock` leaves a package missing or one too many."""
    tree = needed(line for name in inputs for line in requirement_lines(ROOT / name))
    assert set(locked(ROOT / lock)) == tree


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
    """The first pin of requirements.in, as written there."""
    return requirement_lines(root / RUNTIME_IN)[0]


def _cli_pin(root: Path) -> str:
    """The first pin of the cli extra, as written in requirements-dev.in."""
    name = next(iter(declared(root)[1]))
    return next(
        line
        for line in requirement_lines(root / DEV_IN)
        if canonicalize_name(Requirement(line).name) == name
    )


def _transitive_pin(root: Path) -> str:
    """The first package of requirements.txt that requirements.in does not name."""
    direct = pins(requirement_lines(root / RUNTIME_IN), RUNTIME_IN)
    name, version = next(
        (name, version)
        for name, version in locked(root / RUNTIME_LOCK).items()
        if name not in direct
    )
    return f"{name}=={version}"


def _bump_in_lock(path: Path, pin: str) -> None:
    _replace(path, f"\n{pin} \\\n", f"\n{_bump(pin)} \\\n")


def bump_input_only(root: Path) -> None:
    pin = _runtime_pin(root)
    _replace(root / RUNTIME_IN, f"\n{pin}\n", f"\n{_bump(pin)}\n")


def bump_pyproject_only(root: Path) -> None:
    pin = _runtime_pin(root)
    _replace(root / "pyproject.toml", f'"{pin}"', f'"{_bump(pin)}"')


def bump_input_and_pyproject_but_not_the_lock(root: Path) -> None:
    pin = _runtime_pin(root)
    _replace(root / RUNTIME_IN, f"\n{pin}\n", f"\n{_bump(pin)}\n")
    _replace(root / "pyproject.toml", f'"{pin}"', f'"{_bump(pin)}"')


def bump_runtime_lock_only(root: Path) -> None:
    _bump_in_lock(root / RUNTIME_LOCK, _runtime_pin(root))


def bump_a_transitive_pin_of_the_runtime_lock_only(root: Path) -> None:
    _bump_in_lock(root / RUNTIME_LOCK, _transitive_pin(root))


def bump_a_transitive_pin_of_the_dev_lock_only(root: Path) -> None:
    _bump_in_lock(root / DEV_LOCK, _transitive_pin(root))


def add_to_input_only(root: Path) -> None:
    with (root / RUNTIME_IN).open("a") as file:
        file.write(f"{_transitive_pin(root)}\n")


def drop_from_pyproject_only(root: Path) -> None:
    _replace(root / "pyproject.toml", f'"{_runtime_pin(root)}",', "")


def bump_dev_pin_of_the_extra_only(root: Path) -> None:
    pin = _cli_pin(root)
    _replace(root / DEV_IN, f"\n{pin}\n", f"\n{_bump(pin)}\n")


def bump_extra_only(root: Path) -> None:
    pin = _cli_pin(root)
    _replace(root / "pyproject.toml", f'"{pin}"', f'"{_bump(pin)}"')


def _copy(root: Path) -> None:
    for name in FILES:
        shutil.copy(ROOT / name, root / name)


@pytest.mark.parametrize(
    "change",
    [
        bump_input_only,
        bump_pyproject_only,
        bump_input_and_pyproject_but_not_the_lock,
        bump_runtime_lock_only,
        bump_a_transitive_pin_of_the_runtime_lock_only,
        bump_a_transitive_pin_of_the_dev_lock_only,
        add_to_input_only,
        drop_from_pyproject_only,
        bump_dev_pin_of_the_extra_only,
        bump_extra_only,
    ],
)
def test_a_change_to_one_side_alone_is_found(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    _copy(tmp_path)
    assert mismatches(tmp_path) == []
    change(tmp_path)
    assert mismatches(tmp_path) != []


def loosen_a_pin_in_pyproject(root: Path) -> None:
    pin = _runtime_pin(root)
    _replace(root / "pyproject.toml", f'"{pin}"', f'"{pin.replace("==", "~=")}"')


def loosen_a_pin_in_the_lock(root: Path) -> None:
    pin = _transitive_pin(root)
    _replace(root / RUNTIME_LOCK, f"\n{pin} \\\n", f"\n{pin.replace('==', '>=')} \\\n")


def add_an_unhashed_requirement_to_the_lock(root: Path) -> None:
    with (root / RUNTIME_LOCK).open("a") as file:
        file.write(f"{_transitive_pin(root)}\n")


def strip_the_hashes_of_a_package_in_the_lock(root: Path) -> None:
    path = root / DEV_LOCK
    pin = _transitive_pin(root)
    path.write_text(
        re.sub(
            rf"\n{re.escape(pin)} \\\n(\s+--hash=\S+ \\\n)*\s+--hash=\S+\n",
            f"\n{pin}\n",
            path.read_text(),
        )
    )


def break_a_hash_in_the_lock(root: Path) -> None:
    path = root / RUNTIME_LOCK
    path.write_text(path.read_text().replace("--hash=sha256:", "--hash=sha256:x", 1))


def include_a_file_in_the_lock(root: Path) -> None:
    with (root / RUNTIME_LOCK).open("a") as file:
        file.write(f"-r {RUNTIME_IN}\n")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (loosen_a_pin_in_pyproject, "not pinned"),
        (loosen_a_pin_in_the_lock, "not pinned"),
        (add_an_unhashed_requirement_to_the_lock, "no --hash"),
        (strip_the_hashes_of_a_package_in_the_lock, "no --hash"),
        (break_a_hash_in_the_lock, "no sha256 hash"),
        (include_a_file_in_the_lock, "requirements only"),
    ],
)
def test_a_pin_without_its_hashes_or_loosened_to_a_range_is_refused(
    tmp_path: Path, change: Callable[[Path], None], reason: str
) -> None:
    _copy(tmp_path)
    change(tmp_path)
    with pytest.raises(ValueError, match=reason):
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
