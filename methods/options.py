"""Method options: typed, with defaults and help, declared by each method as a frozen dataclass.

A method with options subclasses `MethodOptions` and declares each option with `option(default, help)`::

    @dataclass(frozen=True)
    class LoraOptions(MethodOptions):
        rank: int = option(4, "rank r of the q and v branches")

and sets ``Options = LoraOptions`` on the method class. The user writes ``lora:rank=16`` (see
`cadbench.vocabulary.method_spec` for the text form); `parse` turns the text into a typed, validated instance and `canonical`
gives it back as text: only the options that differ from their defaults, in declared order. That canonical text is
what a cell records (`Cell.method_options`), so ``lora`` and ``lora:rank=4`` are the same cell.

Supported option types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``tuple[X, ...]`` / ``list[X]``
(items joined with ``+``), and ``X | None`` (written ``none``). A subclass may validate further in
``__post_init__`` by raising `OptionError`; it is reported with the option and the method named.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, Literal, Mapping

from cadbench.errors import CadbenchError
from cadbench.vocabulary.method_spec import LIST_SEPARATOR, join_option_items

NONE_TEXT = "none"
TRUE_TEXTS, FALSE_TEXTS = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def option(default: Any, help: str) -> Any:
    """A dataclass field that is a method option (its help text is shown by `cadbench list`)."""
    return field(default=default, metadata={"help": help})


class OptionError(ValueError):
    """A value an option cannot take; raised by converters and `__post_init__`, reported naming the option."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class OptionInfo:
    """One declared option, as `cadbench list` shows it."""

    name: str
    type: str
    default: str
    help: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "default": self.default, "help": self.help}


@dataclass(frozen=True)
class MethodOptions:
    """A method's options. This base class declares none: a method without options accepts only its bare name."""

    # Shown after the declared options by `cadbench list` (e.g. that peft also takes any field of peft's config).
    more_help: ClassVar[str] = ""

    @classmethod
    def declared(cls) -> tuple[OptionInfo, ...]:
        hints = typing.get_type_hints(cls)
        return tuple(OptionInfo(f.name, type_text(hints[f.name]), format_value(_default(f)), f.metadata.get("help", ""))
                     for f in fields(cls))

    @classmethod
    def parse(cls, method: str, items: Mapping[str, str]) -> "MethodOptions":
        """Typed options from {name: text}; a CadbenchError naming the option and the valid ones otherwise."""
        hints = typing.get_type_hints(cls)
        declared = {f.name: f for f in fields(cls)}
        values = {}
        for name, text in items.items():
            if name not in declared:
                raise cls.unknown_option(method, name)
            try:
                values[name] = parse_value(text, hints[name], name)
            except OptionError as exc:
                raise cls.bad_value(method, name, text, str(exc)) from None
        try:
            return cls(**values)
        except OptionError as exc:
            raise cls.bad_value(method, exc.name, items.get(exc.name, ""), str(exc)) from None

    def canonical(self) -> str:
        """'rank=16': the options that differ from their defaults, in declared order ('' when all are default)."""
        return join_option_items([(f.name, format_value(getattr(self, f.name))) for f in fields(self)
                                  if getattr(self, f.name) != _default(f)])

    # -- errors -------------------------------------------------------------------------------------------------
    @classmethod
    def valid_text(cls) -> str:
        names = [info.name for info in cls.declared()]
        return f"valid: {', '.join(names)}" if names else "it takes no options"

    @classmethod
    def unknown_option(cls, method: str, name: str) -> CadbenchError:
        return CadbenchError(f"method {method}: unknown option {name!r}; {cls.valid_text()}")

    @classmethod
    def bad_value(cls, method: str, name: str, text: str, reason: str) -> CadbenchError:
        info = {option.name: option for option in cls.declared()}.get(name)
        expected = f" ({name}: {info.type}, default {info.default})" if info else ""
        return CadbenchError(f"method {method}: option {name}={text}: {reason}{expected}; {cls.valid_text()}")


# -- values -----------------------------------------------------------------------------------------------------
def parse_value(text: str, hint: Any, name: str) -> Any:
    """The value of type `hint` written as `text` (raises OptionError)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in arguments and text.lower() == NONE_TEXT:
            return None
        others = [argument for argument in arguments if argument is not type(None)]
        # A list type first: 'qkv' given for `list[str] | str` is the one-item list, never a regular expression.
        others.sort(key=lambda argument: typing.get_origin(argument) not in (list, tuple))
        reasons = []
        for argument in others:
            try:
                return parse_value(text, argument, name)
            except OptionError as exc:
                reasons.append(str(exc))
        raise OptionError(name, " or ".join(reasons))
    if origin in (list, tuple):
        item_hint = arguments[0] if arguments else str
        items = [item.strip() for item in text.split(LIST_SEPARATOR)] if text else []
        if any(not item for item in items):
            raise OptionError(name, f"expected items joined by {LIST_SEPARATOR!r}")
        values = [parse_value(item, item_hint, name) for item in items]
        return tuple(values) if origin is tuple else values
    if origin is Literal:
        for choice in arguments:
            if text == format_value(choice) or text.lower() == str(choice).lower():
                return choice
        raise OptionError(name, f"expected one of {', '.join(format_value(choice) for choice in arguments)}")
    if hint is bool:
        if text.lower() in TRUE_TEXTS:
            return True
        if text.lower() in FALSE_TEXTS:
            return False
        raise OptionError(name, "expected true or false")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise OptionError(name, "expected an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise OptionError(name, "expected a number") from None
    if hint is str:
        return text
    raise OptionError(name, f"a value of type {type_text(hint)} cannot be written as an option")


def format_value(value: Any) -> str:
    """The text `parse_value` reads back as `value`."""
    if value is None:
        return NONE_TEXT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return LIST_SEPARATOR.join(format_value(item) for item in value)
    return str(value)


def type_text(hint: Any) -> str:
    """For people: 'int', 'list of str', 'one of none, all', 'int or none'."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(argument) if argument is not type(None) else NONE_TEXT for argument in arguments)
    if origin in (list, tuple):
        return f"list of {type_text(arguments[0]) if arguments else 'str'} (joined by {LIST_SEPARATOR})"
    if origin is Literal:
        return f"one of {', '.join(format_value(choice) for choice in arguments)}"
    return getattr(hint, "__name__", str(hint))


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"method option {f.name} has no default")
