"""Lazy re-exports for a subpackage's `__init__`: the API is stated there, its modules load on first use (so that
`cadbench --help` and the cell processes do not import torch, pandas or matplotlib before they need them)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that finds `name` in `package.<exports[name]>`."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
