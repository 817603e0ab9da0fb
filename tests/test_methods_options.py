"""Method options: typed values from text, canonical text back, and one-line refusals naming the option."""

from dataclasses import dataclass
from typing import Literal

import re

import pytest

from cadbench.errors import CadbenchError
from cadbench.methods import BUILTIN_METHODS, MethodOptions, option
from cadbench.methods.options import OptionError, format_value, parse_value


@dataclass(frozen=True)
class ExampleOptions(MethodOptions):
    rank: int = option(4, "a rank")
    scale: float = option(1.0, "a scale")
    bias: bool = option(False, "with a bias")
    mode: Literal["fast", "exact"] = option("exact", "how")
    modules: tuple[str, ...] = option(("qkv",), "where")
    limit: int | None = option(None, "an optional limit")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise OptionError("rank", "must be a positive integer")


def test_values_are_parsed_by_their_declared_types():
    options = ExampleOptions.parse("example", {"rank": "16", "scale": "0.5", "bias": "true", "mode": "fast",
                                               "modules": "qkv+proj", "limit": "3"})
    assert options == ExampleOptions(16, 0.5, True, "fast", ("qkv", "proj"), 3)
    assert ExampleOptions.parse("example", {"limit": "none"}).limit is None


def test_canonical_text_holds_only_non_default_options_in_declared_order_and_parses_back():
    options = ExampleOptions.parse("example", {"modules": "qkv+proj", "rank": "16"})
    assert options.canonical() == "rank=16,modules=qkv+proj"
    assert ExampleOptions.parse("example", {"rank": "4", "mode": "exact"}).canonical() == ""  # all at defaults
    items = dict(item.split("=") for item in options.canonical().split(","))
    assert ExampleOptions.parse("example", items) == options


@pytest.mark.parametrize("items, message", [
    ({"rnak": "3"}, "method example: unknown option 'rnak'; valid: rank, scale, bias, mode, modules, limit"),
    ({"rank": "x"}, "method example: option rank=x: expected an integer (rank: int, default 4); valid: rank,"),
    ({"rank": "0"}, "method example: option rank=0: must be a positive integer (rank: int, default 4)"),
    ({"mode": "slow"}, "method example: option mode=slow: expected one of fast, exact"),
    ({"bias": "maybe"}, "method example: option bias=maybe: expected true or false"),
    ({"modules": "qkv++proj"}, "method example: option modules=qkv++proj: expected items joined by '+'"),
])
def test_unknown_options_and_bad_values_are_refused_naming_the_option_and_the_valid_ones(items, message):
    with pytest.raises(CadbenchError, match=re.escape(message)) as raised:
        ExampleOptions.parse("example", items)
    assert "\n" not in str(raised.value)


def test_a_method_without_options_takes_none():
    assert MethodOptions.parse("cad", {}) == MethodOptions()
    with pytest.raises(CadbenchError, match="method cad: unknown option 'rank'; it takes no options"):
        MethodOptions.parse("cad", {"rank": "4"})


def test_declared_options_carry_type_default_and_help_for_cadbench_list():
    (rank, *_), modules = ExampleOptions.declared(), ExampleOptions.declared()[4]
    assert (rank.name, rank.type, rank.default, rank.help) == ("rank", "int", "4", "a rank")
    assert (modules.type, modules.default) == ("list of str (joined by +)", "qkv")


@pytest.mark.parametrize("method", BUILTIN_METHODS.values(), ids=list(BUILTIN_METHODS))
def test_every_builtin_method_accepts_its_defaults_written_out(method):
    """Each declared default, written as text, parses back to the default options (so `cadbench list` is right)."""
    if method.missing_requirement():
        pytest.skip(method.missing_requirement())
    items = {info.name: info.default for info in method.Options.declared() if info.name != "config"}
    assert method.Options.parse(method.name, items).canonical() == ""


def test_format_and_parse_are_inverse_for_every_supported_type():
    for value, hint in [(True, bool), (3, int), (0.25, float), ("x", str), (("a", "b"), tuple[str, ...]),
                        (["a"], list[str]), (None, int | None), ("fast", Literal["fast", "exact"])]:
        assert parse_value(format_value(value), hint, "name") == value
