"""The function app's HTTP functions as the host indexes them, for tests that check
their declarations.

azure-functions indexes an app once (a second ``get_functions()`` finds every name
taken, as the worker never asks twice), so each call indexes a shallow copy with a
fresh name table, as ``ccexport serve`` does (shared/workstation/serve/host.py).
"""

from __future__ import annotations

import copy
from typing import Any


def http_triggers() -> dict[str, dict[str, Any]]:
    """Function name -> its HTTP trigger's declaration (``route``, ``authLevel``...)."""
    import function_app  # noqa: PLC0415 - the app as the host loads it

    indexed = copy.copy(function_app.app)
    indexed.functions_bindings = {}
    found: dict[str, dict[str, Any]] = {}
    for function in indexed.get_functions():
        for binding in function.get_bindings():
            if binding.type == "httpTrigger":
                found[str(function.get_function_name())] = binding.get_dict_repr()
    return found
