"""The cell: one point of the grid, and the one definition of what identifies a measurement.

A `Cell` is one point of the grid. Its dataclass fields are its identity: every consumer (resume, `check`,
`compare`, `merge`, the report, `validate`) keys rows by `cell_key(row)` and takes the identity columns from
`Cell.key_columns()`, so a new grid dimension is one new field here and nothing else. A field marked positional
always appears in the key (``cad/vit_b/4/fp32``); a field attached to another is appended to that field's part of
the key when it differs from its default (the method's options: ``lora:rank=16/vit_b/4/fp32``); any other field
appears as ``name=value`` only when it differs from its default, so results written before a dimension existed keep
their keys and mean its default.

The memory levers are declared in `cadbench.vocabulary.levers`, not here: a cell holds the settings that differ
from their defaults (`lever_settings`), reads each as an attribute (`cell.checkpointing`), takes them as keyword
arguments (`Cell("cad", "vit_b", 4, micro_batch=2)`, `dataclasses.replace(cell, micro_batch=2)`) and gives each its
own column in `as_dict()`, so a lever declared there reaches keys, rows and labels without an edit here.

A cell checks its own values when it is made (`__post_init__`): the batch size, the precision and every lever
setting (each declaration's values and rules: a micro-batch that does not divide the batch size, an encoder chunk
without the lean encoder), refused in one line naming the flag. The names it holds (method, its options, backbone)
are resolved where the user's text becomes cells (`cadbench.harness.grid.make_cell`), which also makes the method's
options canonical: this floor imports nothing above it, and a row read back from a result file stays a cell where
the plugin that measured it is not installed. Whether a lever applies to the cell's *method* is not decided here
either: a lever that cannot apply to a method makes a row saying why (status `not_applicable`), never a refusal of
the whole grid.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, ClassVar, Mapping

from cadbench.errors import CadbenchError, unknown_name_error
from cadbench.vocabulary.levers import NO_MICRO_BATCH, LeverDeclaration, declared_levers, lever_named
from cadbench.vocabulary.method_spec import NAME_SEPARATOR, join_method_spec
from cadbench.vocabulary.method_spec import method_label as spec_label
from cadbench.vocabulary.precision import PRECISIONS, Precision
from cadbench.vocabulary.prompts import WHOLE_IMAGE, PromptsPerImage, check_prompts_per_image, describe_prompts
from cadbench.vocabulary.resolution import NATIVE_IMAGE_SIZE, check_image_size, image_size_label

DEFAULT_BATCH_SIZES = (1, 2, 4, 8)  # the grid's batch sizes unless the user gives some

POSITIONAL = {"key": "positional"}  # field metadata: always part of the key, as a bare value
LEVERS = {"key": "levers"}  # field metadata: the lever settings, one column and ``name=value`` key part each


def attached_to(field_name: str, separator: str) -> dict[str, str]:
    """Field metadata: appended to `field_name`'s part of the key, after `separator`, when not at its default."""
    return {"key": "attached", "to": field_name, "separator": separator}


LeverSettings = tuple[tuple[str, Any], ...]  # (name, value) of each lever not at its default, in declaration order


@dataclass(frozen=True, init=False)
class Cell:
    """method × backbone × batch size × precision × image size × levers (and, as the grid grows, each further
    dimension)."""

    method: str = field(metadata=POSITIONAL)
    backbone: str = field(metadata=POSITIONAL)
    batch_size: int = field(metadata=POSITIONAL)
    precision: Precision = field(default="fp32", metadata=POSITIONAL)
    # The input side in pixels (cadbench.vocabulary.resolution); 0: the backbone's native size, today's key.
    image_size: int = field(default=NATIVE_IMAGE_SIZE, metadata={"describe": image_size_label})
    # Objects prompted per image (cadbench.vocabulary.prompts): 'image' (one box around the whole image) or N.
    prompts_per_image: PromptsPerImage = field(default=WHOLE_IMAGE, metadata={
        "canonical": check_prompts_per_image, "describe": describe_prompts})
    # The method's options, canonical: 'rank=16', only those that differ from their defaults, in declared order.
    method_options: str = field(default="", metadata=attached_to("method", NAME_SEPARATOR))
    # The memory levers (cadbench.vocabulary.levers) not at their defaults; none: the plain step.
    lever_settings: LeverSettings = field(default=(), metadata=LEVERS)

    KEY_SEPARATOR: ClassVar[str] = "/"

    def __init__(self, *values: Any, **named: Any) -> None:
        """Fields by position or name, and lever settings by name: `Cell("cad", "vit_b", 4, micro_batch=2)`. A
        lever given by name overrides the same lever in `lever_settings` (what `dataclasses.replace` relies on)."""
        own = [f for f in fields(self)]
        if len(values) > len(own):
            raise TypeError(f"Cell takes at most {len(own)} positional values, got {len(values)}")
        given = dict(zip((f.name for f in own), values))
        for name, value in named.items():
            if name in given:
                raise TypeError(f"Cell got two values for {name!r}")
            given[name] = value
        settings = {name: given.pop(name) for name in list(given) if name not in {f.name for f in own}}
        for f in own:
            value = given.get(f.name, _default(f))
            if value is MISSING:
                raise TypeError(f"Cell needs {f.name!r}")
            object.__setattr__(self, f.name, value)
        if settings:
            object.__setattr__(self, "lever_settings", {**dict(self.lever_settings), **settings})
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.method_options, str):
            raise ValueError(f"method_options must be text like 'rank=16', got {self.method_options!r}")
        check_batch_size(self.batch_size)
        check_image_size(self.image_size)
        if self.precision not in PRECISIONS:
            raise unknown_name_error("precision", self.precision, PRECISIONS)
        object.__setattr__(self, "prompts_per_image", check_prompts_per_image(self.prompts_per_image))
        object.__setattr__(self, "lever_settings", _canonical_levers(dict(self.lever_settings), self.batch_size))

    def __getattr__(self, name: str) -> Any:
        """A lever's setting, `cell.micro_batch`: its value here, else its default."""
        declaration = lever_named(name)
        if declaration is None:
            raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")
        return dict(self.__dict__.get("lever_settings", ())).get(name, declaration.default)

    @property
    def images_per_pass(self) -> int:
        """Images in one forward and backward: the micro-batch, or the whole batch."""
        return self.micro_batch or self.batch_size

    @property
    def levers(self) -> dict[str, Any]:
        """The levers that differ from their defaults: {name: value}."""
        return dict(self.lever_settings)

    @property
    def plain(self) -> "Cell":
        """The same cell with every lever at its default (its precision kept)."""
        return replace(self, lever_settings=())

    @property
    def lever_label(self) -> str:
        """The non-default levers for people: 'checkpointed encoder, micro-batch 2' ('' for none)."""
        return lever_label(self.as_dict())

    # -- identity -----------------------------------------------------------------------------------------------
    @classmethod
    def key_columns(cls) -> tuple[str, ...]:
        """The row columns that identify a cell, in field order (each declared lever in the levers' place)."""
        return tuple(name for f in fields(cls) for name in _column_names(f))

    @classmethod
    def positional_columns(cls) -> tuple[str, ...]:
        """The identity columns every row must have (the others may be missing from older results)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("key") == "positional")

    @classmethod
    def key_of(cls, row: Mapping[str, Any]) -> str:
        """The key of the cell a result row (a dict, or a DataFrame row) belongs to, without validating names: a
        result file stays readable where the plugin that measured it is not installed. A column missing from the
        row (written before that dimension existed) means the field's default."""
        parts: dict[str, str] = {}
        further = []
        for f in fields(cls):
            kind = f.metadata.get("key")
            if kind == "levers":
                further += [f"{lever.name}={value}" for lever in declared_levers()
                            if (value := _lever_value(row, lever)) != lever.default]
                continue
            value = _row_value(row, f)
            if kind == "positional":
                parts[f.name] = str(value)
            elif value == _default(f):
                continue
            elif kind == "attached":
                parts[f.metadata["to"]] += f.metadata["separator"] + str(value)
            else:
                further.append(f"{f.name}={value}")
        return cls.KEY_SEPARATOR.join([*parts.values(), *further])

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Cell":
        """The (checked) cell of a result row."""
        values = {f.name: _plain(_row_value(row, f)) for f in fields(cls) if f.metadata.get("key") != "levers"}
        levers = tuple((lever.name, value) for lever in declared_levers()
                       if (value := _plain(_lever_value(row, lever))) != lever.default)
        return cls(**values, lever_settings=levers)

    @property
    def key(self) -> str:
        return self.key_of(self.as_dict())

    @property
    def method_spec(self) -> str:
        """The method as the user writes it: 'lora:rank=16', or 'cad'."""
        return join_method_spec(self.method, self.method_options)

    @property
    def method_label(self) -> str:
        """The method for people: 'lora (rank 16)', or 'cad'."""
        return spec_label(self.method, self.method_options)

    def further_labels(self) -> list[str]:
        """Every non-default dimension beyond the positional ones, for people: ['checkpointed encoder', ...]."""
        labels = []
        for f in fields(self):
            kind = f.metadata.get("key")
            if kind == "levers":
                labels += [lever.describe(value) for lever in declared_levers()
                           if (value := getattr(self, lever.name)) != lever.default]
            elif kind not in ("positional", "attached") and getattr(self, f.name) != _default(f):
                describe = f.metadata.get("describe")
                labels.append(describe(getattr(self, f.name)) if describe else f"{f.name} {getattr(self, f.name)}")
        return labels

    def as_dict(self) -> dict[str, Any]:
        """The cell as row columns: every field, and every declared lever in its own column."""
        row: dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("key") == "levers":
                row.update((lever.name, getattr(self, lever.name)) for lever in declared_levers())
            else:
                row[f.name] = getattr(self, f.name)
        return row


def _canonical_levers(settings: dict[str, Any], batch_size: int) -> LeverSettings:
    """Each lever setting checked against its declaration and the rest of the cell, canonical, defaults dropped."""
    declared = {lever.name: lever for lever in declared_levers()}
    unknown = sorted(set(settings) - set(declared))
    if unknown:
        raise ValueError(f"not levers of a cell: {', '.join(unknown)}; declared: {', '.join(declared)}")
    values = {name: settings.get(name, lever.default) for name, lever in declared.items()}
    for name, lever in declared.items():
        value = values[name]
        for other, needed in lever.needs.items():
            if value != lever.default and values[other] != needed:
                why = f": {lever.needs_why}" if lever.needs_why else ""
                raise CadbenchError(f"{lever.flag} {lever.show(value)} needs {declared[other].flag} {needed}{why}")
        values[name] = lever.check(value, batch_size, values)
    return tuple((name, value) for name, value in values.items() if value != declared[name].default)


def lever_label(row: Mapping[str, Any]) -> str:
    """A result row's non-default levers for people, 'checkpointed encoder, micro-batch 2' ('' for none); a column
    missing from the row (written before that lever existed) means its default."""
    return ", ".join(lever.describe(value) for lever in declared_levers()
                     if (value := _lever_value(row, lever)) != lever.default)


def cell_key(row: Mapping[str, Any]) -> str:
    """The key of the cell a result row belongs to (see `Cell.key_of`)."""
    return Cell.key_of(row)


def check_batch_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CadbenchError(f"batch size must be a positive integer, got {value!r}")
    return value


def _column_names(f) -> tuple[str, ...]:
    return tuple(lever.name for lever in declared_levers()) if f.metadata.get("key") == "levers" else (f.name,)


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _row_value(row: Mapping[str, Any], f) -> Any:
    value = row.get(f.name) if hasattr(row, "get") else row[f.name]
    if _missing(value):
        value = _default(f)
        if value is MISSING:
            raise KeyError(f"result row has no {f.name!r}")
    if f.type in ("int", int) and isinstance(value, float) and value.is_integer():
        value = int(value)  # a CSV column with empty cells is read as floats
    canonical = f.metadata.get("canonical")
    if canonical is not None:
        try:
            value = canonical(_plain(value))  # '8' from a CSV column that also holds 'image', 8.0 from one with gaps
        except CadbenchError:
            pass  # a key is read without validating; `from_row` makes a Cell, which refuses it
    return value


def _lever_value(row: Mapping[str, Any], lever: LeverDeclaration) -> Any:
    value = row.get(lever.name) if hasattr(row, "get") else row[lever.name]
    if _missing(value):
        return lever.default  # written before the lever existed
    if isinstance(lever.default, int) and isinstance(value, float) and value.is_integer():
        value = int(value)  # a CSV column with empty cells is read as floats: 2.0 is the micro-batch 2
    return value


def _plain(value: Any) -> Any:
    """numpy scalars (rows read through pandas) as Python values."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


__all__ = ["DEFAULT_BATCH_SIZES", "NO_MICRO_BATCH", "Cell", "cell_key", "check_batch_size", "lever_label"]
