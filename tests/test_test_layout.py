"""No module under tests/ imports a test module; what tests share lives in tests/support/.

Why: a test module is a place for tests, not a library. Importing one
(``from tests.test_http_api import call``) hides that its helpers are shared, so a
change made for its own tests breaks another file; it runs the whole module's top
level (its imports, its constants, its ``pytestmark``) wherever it is imported; a test
function or fixture imported by name is collected or used a second time, under the
importer, without anyone saying so; and renaming, splitting or deselecting that file
(mutmut's selection in pyproject.toml runs some test files and not others) fails
modules that never mention it. Fixtures belong in tests/conftest.py (or a conftest of
a subpackage), everything else in a tests/support/ module.

Checked with ``ast`` over every file, tests/chaos and tests/mutation included:
``import tests.test_x``, ``from tests.test_x import y``, ``from tests import test_x``,
the same for ``tests.chaos.test_*``, relative imports (``from .test_x import y``,
``from . import test_x``), and ``importlib.import_module``/``__import__`` of such a
name written out as a string. A tree with each of them is shown to fail below.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.services import ROOT


def _is_test_module(dotted: str) -> bool:
    """A name inside the tests package with a ``test_*`` module on its path."""
    parts = dotted.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") for part in parts[1:])


def _package_of(path: Path, root: Path) -> list[str]:
    """The dotted package a file under root belongs to, as parts (tests/chaos/x.py ->
    ["tests", "chaos"])."""
    return list(path.relative_to(root).with_suffix("").parts[:-1])


def _imported(node: ast.AST, package: list[str]) -> list[str]:
    """Every module name an import statement (or a literal dynamic import) may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = package[: len(package) - (node.level - 1)] if node.level else []
        if node.module:
            base = [*base, *node.module.split(".")]
        # `from a import b` loads a, and a.b when b is a module.
        return [".".join(base), *(".".join([*base, alias.name]) for alias in node.names)]
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        called = ""
        if isinstance(func, ast.Attribute):
            called = func.attr
        elif isinstance(func, ast.Name):
            called = func.id
        first = node.args[0]
        if (
            called in ("import_module", "__import__")
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
        ):
            return [first.value]
    return []


def imports_of_test_modules(root: Path) -> list[str]:
    """Each import of a test module by a module under root/tests, as "path:line: name"."""
    found: list[str] = []
    for path in sorted((root / "tests").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        package = _package_of(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for name in _imported(node, package):
                if _is_test_module(name):
                    where = path.relative_to(root).as_posix()
                    found.append(f"{where}:{getattr(node, 'lineno', 0)}: {name}")
                    break
    return found


def test_no_module_under_tests_imports_a_test_module() -> None:
    found = imports_of_test_modules(ROOT)
    assert not found, (
        "test modules import other test modules; move what they share to tests/support/ "
        "(fixtures to tests/conftest.py):\n" + "\n".join(found)
    )


def test_the_check_finds_every_form_of_import(tmp_path: Path) -> None:
    files = {
        "tests/__init__.py": "",
        "tests/test_api.py": "LIST = 1\n",
        "tests/support/__init__.py": "",
        "tests/support/calls.py": "import json\nfrom tests.support import other\n",
        "tests/test_plain.py": "import tests.test_api\n",
        "tests/test_from.py": "from tests.test_api import LIST\n",
        "tests/test_package.py": "from tests import support, test_api\n",
        "tests/test_relative.py": "from .test_api import LIST\n",
        "tests/test_relative_package.py": "from . import test_api\n",
        "tests/test_fine.py": (
            "from tests.support.calls import json\nfrom tests import support\n"
            "from .support import calls\nimport pytest\n"
        ),
        "tests/test_dynamic.py": "import importlib\nimportlib.import_module('tests.test_api')\n",
        "tests/test_late.py": "def f():\n    from tests.test_api import LIST\n    return LIST\n",
        "tests/chaos/__init__.py": "",
        "tests/chaos/test_up.py": "from .. import test_api\n",
        "tests/chaos/test_up_from.py": "from ..test_api import LIST\n",
        "tests/chaos/test_sibling.py": "from tests.chaos.test_up import test_api\n",
        "tests/chaos/helpers.py": "from tests.chaos import test_up\n",
        "tests/mutation/__init__.py": "",
        "tests/mutation/plugin.py": "import tests.test_api as api\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")

    assert imports_of_test_modules(tmp_path) == [
        "tests/chaos/helpers.py:1: tests.chaos.test_up",
        "tests/chaos/test_sibling.py:1: tests.chaos.test_up",
        "tests/chaos/test_up.py:1: tests.test_api",
        "tests/chaos/test_up_from.py:1: tests.test_api",
        "tests/mutation/plugin.py:1: tests.test_api",
        "tests/test_dynamic.py:2: tests.test_api",
        "tests/test_from.py:1: tests.test_api",
        "tests/test_late.py:2: tests.test_api",
        "tests/test_package.py:1: tests.test_api",
        "tests/test_plain.py:1: tests.test_api",
        "tests/test_relative.py:1: tests.test_api",
        "tests/test_relative_package.py:1: tests.test_api",
    ]
