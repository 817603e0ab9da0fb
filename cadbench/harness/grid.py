"""The sweep's grid and its cells: the one definition of what identifies a measurement.

A `Cell` is one point of the grid. Its dataclass fields are its identity: every consumer (resume, `check`,
`compare`, `merge`, the report, `validate`) keys rows by `cell_key(row)` and takes the identity columns from
`Cell.key_columns()`, so a new grid dimension is one new field here and nothing else. A field marked positional
always appears in the key (``cad/vit_b/4/fp32``); a field attached to another is appended to that field's part of
the key when it differs from its default (the method's options: ``lora:rank=16/vit_b/4/fp32``); any other field
appears as ``name=value`` only when it differs from its default, so results written before a dimension existed keep
their keys and mean its default.

A cell validates itself when it is made (`__post_init__`): this is where the user's names and numbers become a
typed object, and inner code trusts it.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from itertools import product
from typing import Any, ClassVar, Iterable, Literal, Mapping, get_args

from cadbench.errors import CadbenchError, unknown_name_error
from cadbench.method_spec import NAME_SEPARATOR, join_method_spec, split_method_spec
from cadbench.method_spec import method_label as spec_label

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32",)

POSITIONAL = {"key": "positional"}  # field metadata: always part of the key, as a bare value


def attached_to(field_name: str, separator: str) -> dict[str, str]:
    """Field metadata: appended to `field_name`'s part of the key, after `separator`, when not at its default."""
    return {"key": "attached", "to": field_name, "separator": separator}


@dataclass(frozen=True)
class Cell:
    """method × backbone × batch size × precision (and, as the grid grows, each further dimension)."""

    method: str = field(metadata=POSITIONAL)
    backbone: str = field(metadata=POSITIONAL)
    batch_size: int = field(metadata=POSITIONAL)
    precision: Precision = field(default="fp32", metadata=POSITIONAL)
    # The method's options, canonical: 'rank=16', only those that differ from their defaults, in declared order.
    method_options: str = field(default="", metadata=attached_to("method", NAME_SEPARATOR))

    KEY_SEPARATOR: ClassVar[str] = "/"

    def __post_init__(self) -> None:
        from cadbench.backbones import get_backbone
        from cadbench.registry import resolve_method

        if not isinstance(self.method_options, str):
            raise ValueError(f"method_options must be text like 'rank=16', got {self.method_options!r}")
        spec = resolve_method(self.method, self.method_options)  # the name, and the options through its Options
        object.__setattr__(self, "method_options", spec.options_text)  # 'lora:rank=4' is the cell 'lora'
        get_backbone(self.backbone)
        check_batch_size(self.batch_size)
        if self.precision not in PRECISIONS:
            raise unknown_name_error("precision", self.precision, PRECISIONS)

    # -- identity -----------------------------------------------------------------------------------------------
    @classmethod
    def key_columns(cls) -> tuple[str, ...]:
        """The row columns that identify a cell, in field order."""
        return tuple(f.name for f in fields(cls))

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
            value = _row_value(row, f)
            kind = f.metadata.get("key")
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
        """The (validated) cell of a result row."""
        return cls(**{f.name: _plain(_row_value(row, f)) for f in fields(cls)})

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

    @property
    def label(self) -> str:
        """For people: 'lora (rank 16) · vit_b (test scale) · batch 4 · fp32', plus every non-default further
        dimension."""
        from cadbench.backbones import get_backbone

        parts = [self.method_label, get_backbone(self.backbone).label, f"batch {self.batch_size}", self.precision]
        parts += [f"{f.name} {getattr(self, f.name)}" for f in fields(self)
                  if f.metadata.get("key") not in ("positional", "attached") and getattr(self, f.name) != _default(f)]
        return " · ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cell_key(row: Mapping[str, Any]) -> str:
    """The key of the cell a result row belongs to (see `Cell.key_of`)."""
    return Cell.key_of(row)


def check_batch_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CadbenchError(f"batch size must be a positive integer, got {value!r}")
    return value


def expand_grid(
    methods: Iterable[str], backbones: Iterable[str], batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    precisions: Iterable[str] = DEFAULT_PRECISIONS,
) -> list[Cell]:
    """All cells, backbone-major so that a sweep finishes the small backbones first. Raises on any bad value.

    `methods` are method specs: 'cad', 'lora:rank=16' (see cadbench.method_spec).
    """
    specs = [split_method_spec(method) for method in methods]
    cells = [Cell(name, backbone, size, precision, method_options=options)
             for backbone, size, precision, (name, options) in product(backbones, batch_sizes, precisions, specs)]
    return list(dict.fromkeys(cells))  # duplicates in the lists give each cell once


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _row_value(row: Mapping[str, Any], f) -> Any:
    value = row.get(f.name) if hasattr(row, "get") else row[f.name]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = _default(f)
        if value is MISSING:
            raise KeyError(f"result row has no {f.name!r}")
    return value


def _plain(value: Any) -> Any:
    """numpy scalars (rows read through pandas) as Python values."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value
