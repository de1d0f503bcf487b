"""The console's templates, and the one way a page becomes HTML.

Autoescaping is on for every template and undefined names fail (StrictUndefined), so
a value from a person, a blob name or Constant Contact can never become markup and a
misspelled name is a test failure, not an empty cell.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from shared.console.wording import when

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CONSOLE_ROUTE = "console"
"""Where the console lives under the app's route prefix: ``/api/console/``."""
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@cache
def environment() -> Environment:
    made = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    made.globals["when"] = when  # times as people read them, in every template
    return made


def render(template: str, **context: Any) -> str:
    """The page ``template`` with ``context``; ``base`` is where the console's links start."""
    return environment().get_template(template).render(**context)


def static_file(name: str) -> tuple[bytes, str] | None:
    """A file of ``static/`` and its content type, or None: only the files there, by
    their plain names (no folders, no dots but the extension's)."""
    path = STATIC / name
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or "/" in name or name.count(".") != 1 or not path.is_file():
        return None
    return path.read_bytes(), kind
