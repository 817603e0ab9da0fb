"""Method lookup: the built-in methods plus any registered by other packages under the `cadbench.methods`
entry-point group (the entry point names a `cadbench.methods.Method` subclass).

A method spec (`lora`, `lora:rank=16`; the text form is in `cadbench.vocabulary.method_spec`) becomes an object here, once:
`resolve_method` finds the method, checks it can run here, and parses its options through the method's `Options`,
as timm's registry splits `arch.tag`. Everything after this trusts a `MethodSpec`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib.metadata import entry_points

from segment_anything.modeling import Sam

from cadbench.errors import CadbenchError, unknown_name_error
from cadbench.methods import BUILTIN_METHODS, Method, MethodOptions
from cadbench.vocabulary.method_spec import join_method_spec, method_label, option_items, split_method_spec

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


def default_methods() -> list[str]:
    """The methods of the default grid: every registered one that can run here (see `unavailable_methods`)."""
    return sorted(name for name, method in available_methods().items() if method.missing_requirement() is None)


def unavailable_methods() -> dict[str, str]:
    """Registered methods that cannot run here (e.g. an optional package is missing), with the reason."""
    return {name: reason for name, method in sorted(available_methods().items())
            if (reason := method.missing_requirement()) is not None}


@dataclass(frozen=True)
class MethodSpec:
    """A method with its parsed options: what a cell's `method` and `method_options` columns mean."""

    method: type[Method]
    options: MethodOptions

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def options_text(self) -> str:
        """Canonical: the non-default options in declared order ('' at the defaults)."""
        return self.options.canonical()

    @property
    def text(self) -> str:
        return join_method_spec(self.name, self.options_text)

    @property
    def label(self) -> str:
        return method_label(self.name, self.options_text)

    def build(self, sam: Sam) -> Method:
        """Wrap `sam` with the method (a method without options is built as `method(sam)`)."""
        if not fields(self.options):
            return self.method(sam)
        return self.method(sam, self.options)


@lru_cache(maxsize=None)
def resolve_method(name: str, options: str = "") -> MethodSpec:
    """The method `name` with its options text parsed; one-line CadbenchError naming what is wrong otherwise."""
    method = get_method(name)
    reason = method.missing_requirement()
    if reason is not None:
        raise CadbenchError(f"method {name} {reason}")
    return MethodSpec(method, method.Options.parse(name, option_items(name, options)))


def parse_method_spec(spec: str) -> MethodSpec:
    """'lora:rank=16' -> the lora method with rank 16 (see `resolve_method`)."""
    return resolve_method(*split_method_spec(spec))


def build_method(spec: str, sam: Sam) -> Method:
    """Wrap `sam` with the method a spec names ('cad', 'lora:rank=16')."""
    return parse_method_spec(spec).build(sam)
