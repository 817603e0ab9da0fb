"""Method lookup: the built-in methods plus any registered by other packages under the `cadbench.methods`
entry-point group (the entry point names a `cadbench.methods.Method` subclass)."""

from __future__ import annotations

import sys
from functools import lru_cache
from importlib.metadata import entry_points

from segment_anything.modeling import Sam

from cadbench.errors import unknown_name_error
from cadbench.methods import BUILTIN_METHODS, Method

ENTRY_POINT_GROUP = "cadbench.methods"


@lru_cache(maxsize=1)
def available_methods() -> dict[str, type[Method]]:
    """Built-in methods, then third-party ones; a plugin that fails to load is reported and skipped."""
    methods: dict[str, type[Method]] = dict(BUILTIN_METHODS)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in BUILTIN_METHODS:
            print(f"cadbench: warning: plugin {entry_point.value} reuses built-in method name "
                  f"{entry_point.name!r}; ignored", file=sys.stderr)
            continue
        try:
            loaded = entry_point.load()
        except Exception as exc:
            print(f"cadbench: warning: method plugin {entry_point.name!r} ({entry_point.value}) failed to load: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        if not (isinstance(loaded, type) and issubclass(loaded, Method)):
            print(f"cadbench: warning: method plugin {entry_point.name!r} ({entry_point.value}) is not a "
                  f"cadbench.methods.Method subclass; ignored", file=sys.stderr)
            continue
        methods[entry_point.name] = loaded
    return methods


def get_method(name: str) -> type[Method]:
    methods = available_methods()
    try:
        return methods[name]
    except KeyError:
        raise unknown_name_error("method", name, methods) from None


def build_method(name: str, sam: Sam) -> Method:
    """Wrap `sam` with the named method."""
    return get_method(name)(sam)
