"""The text form of a method spec, `name` or `name:key=value,...`, and of a list of them (no torch imported here).

A spec names a method and, optionally, its options: ``lora``, ``lora:rank=16``, ``peft:type=loha,r=4``. A list of
specs is comma-separated, like every other grid flag; options are comma-separated too, so an item is told apart by
what comes before its first ``=``:

* it contains a ``:`` (``lora:rank=16``) or there is no ``=`` at all (``cad``): the item starts a new method spec;
* otherwise (``r=8``) the item is one more option of the method before it.

So ``lora:rank=16,lora,peft:type=lora,r=8,cad`` is four specs: ``lora:rank=16``, ``lora``, ``peft:type=lora,r=8``
and ``cad``. A value that is a list (peft's ``target_modules``) joins its items with ``+``: ``target_modules=qkv+proj``.

This module only splits and joins text. What the options mean (their types, defaults, whether a value is valid) is
checked once, where a spec becomes an object: `cadbench.registry.resolve_method`.
"""

from __future__ import annotations

from cadbench.errors import CadbenchError

NAME_SEPARATOR = ":"  # between a method's name and its options
OPTION_SEPARATOR = ","  # between options, and between the specs of a list
ASSIGNMENT = "="  # between an option's name and its value
LIST_SEPARATOR = "+"  # between the items of a list value


def split_method_list(text: str) -> list[str]:
    """'lora:rank=16,lora,cad' -> ['lora:rank=16', 'lora', 'cad'] (see the module docstring for the rule)."""
    specs: list[str] = []
    for item in (part.strip() for part in text.split(OPTION_SEPARATOR)):
        if not item:  # a typo whose meaning cannot be known, as in every comma list (commands.arguments.comma_list)
            raise CadbenchError(f"empty item in {text!r}; give values separated by single commas")
        if _is_option(item):
            if not specs:
                raise CadbenchError(f"method option {item!r} comes before any method name; write METHOD:{item}")
            separator = OPTION_SEPARATOR if NAME_SEPARATOR in specs[-1] else NAME_SEPARATOR
            specs[-1] += separator + item
        else:
            specs.append(item)
    if not specs:
        raise CadbenchError(f"expected a comma-separated list of methods, got {text!r}")
    return specs


def split_method_spec(spec: str) -> tuple[str, str]:
    """'lora:rank=16' -> ('lora', 'rank=16'); 'cad' -> ('cad', '')."""
    name, _, options = spec.partition(NAME_SEPARATOR)
    return name.strip(), options.strip()


def join_method_spec(name: str, options: str) -> str:
    """('lora', 'rank=16') -> 'lora:rank=16'; ('cad', '') -> 'cad'."""
    return f"{name}{NAME_SEPARATOR}{options}" if options else name


def option_items(method: str, options: str) -> dict[str, str]:
    """'rank=16,alpha=2' -> {'rank': '16', 'alpha': '2'}; an item without '=' or a repeated name is refused."""
    items: dict[str, str] = {}
    for item in (part.strip() for part in options.split(OPTION_SEPARATOR)):
        if not item:
            continue
        key, assigned, value = item.partition(ASSIGNMENT)
        key = key.strip()
        if not assigned or not key:
            raise CadbenchError(f"method {method}: option {item!r} is not of the form name=value")
        if key in items:
            raise CadbenchError(f"method {method}: option {key!r} is given twice")
        items[key] = value.strip()
    return items


def join_option_items(items: list[tuple[str, str]]) -> str:
    """[('rank', '16')] -> 'rank=16' (the items in the order given)."""
    return OPTION_SEPARATOR.join(f"{key}{ASSIGNMENT}{value}" for key, value in items)


def method_label(name: str, options: str = "") -> str:
    """For people: 'lora (rank 16)', 'peft (type loha, r 4)'; a method at its default options is just its name."""
    if not options:
        return name
    shown = ", ".join(f"{key} {value.replace(LIST_SEPARATOR, ' + ')}"
                      for key, value in (item.split(ASSIGNMENT, 1) for item in options.split(OPTION_SEPARATOR)))
    return f"{name} ({shown})"


def _is_option(item: str) -> bool:
    key, assigned, _ = item.partition(ASSIGNMENT)
    return bool(assigned) and NAME_SEPARATOR not in key
