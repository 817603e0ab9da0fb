"""The cell: one point of the grid, and the one definition of what identifies a measurement.

A `Cell` is one point of the grid. Its dataclass fields are its identity: every consumer (resume, `check`,
`compare`, `merge`, the report, `validate`) keys rows by `cell_key(row)` and takes the identity columns from
`Cell.key_columns()`, so a new grid dimension is one new field here and nothing else. A field marked positional
always appears in the key (``cad/vit_b/4/fp32``); a field attached to another is appended to that field's part of
the key when it differs from its default (the method's options: ``lora:rank=16/vit_b/4/fp32``); any other field
appears as ``name=value`` only when it differs from its default, so results written before a dimension existed keep
their keys and mean its default.

A cell checks its own values when it is made (`__post_init__`): the batch size, the precision and the memory levers
(`cadbench.training.levers`), each a field with its default (the plain step), and combinations that make no sense
for any method (a micro-batch that does not divide the batch size, an encoder chunk without the lean encoder),
refused in one line naming the flag. The names it holds (method, its options, backbone) are resolved where the
user's text becomes cells (`cadbench.harness.grid.make_cell`), which also makes the method's options canonical:
this floor imports nothing above it, and a row read back from a result file stays a cell where the plugin that
measured it is not installed. Whether a lever applies to the cell's *method* is not decided here either: a lever
that cannot apply to a method makes a row saying why (status `not_applicable`), never a refusal of the whole grid.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, Mapping, get_args

from cadbench.errors import CadbenchError, unknown_name_error
from cadbench.vocabulary.precision import PRECISIONS, Precision
from cadbench.vocabulary.method_spec import NAME_SEPARATOR, join_method_spec
from cadbench.vocabulary.method_spec import method_label as spec_label

Checkpointing = Literal["none", "encoder"]
FrozenDtype = Literal["fp32", "bf16"]
LeanEncoder = Literal["off", "on"]
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)  # the grid's batch sizes unless the user gives some
NO_MICRO_BATCH = 0  # micro_batch's default: the whole batch in one forward and backward

POSITIONAL = {"key": "positional"}  # field metadata: always part of the key, as a bare value


def attached_to(field_name: str, separator: str) -> dict[str, str]:
    """Field metadata: appended to `field_name`'s part of the key, after `separator`, when not at its default."""
    return {"key": "attached", "to": field_name, "separator": separator}


def lever(flag: str, label: str, values: tuple = ()) -> dict[str, Any]:
    """Field metadata of a memory lever: its command-line flag, its label for people when not at its default
    (`{value}` is replaced by the value), and its valid values (text levers; integer ones are checked in code)."""
    return {"key": "named", "lever": True, "flag": flag, "label": label, "values": values}


@dataclass(frozen=True)
class Cell:
    """method × backbone × batch size × precision (and, as the grid grows, each further dimension)."""

    method: str = field(metadata=POSITIONAL)
    backbone: str = field(metadata=POSITIONAL)
    batch_size: int = field(metadata=POSITIONAL)
    precision: Precision = field(default="fp32", metadata=POSITIONAL)
    # The method's options, canonical: 'rank=16', only those that differ from their defaults, in declared order.
    method_options: str = field(default="", metadata=attached_to("method", NAME_SEPARATOR))
    # Memory levers (cadbench.training.levers); at their defaults the cell is the plain step.
    # Activation checkpointing around every image-encoder block ('encoder'), recomputed in backward.
    checkpointing: Checkpointing = field(default="none", metadata=lever(
        "--checkpointing", "checkpointed {value}", get_args(Checkpointing)))
    # Storage dtype of the frozen parameters; trainable ones, gradients and optimizer states stay float32.
    frozen_dtype: FrozenDtype = field(default="fp32", metadata=lever(
        "--frozen-dtype", "frozen weights {value}", get_args(FrozenDtype)))
    # Gradient accumulation: the batch (the effective batch) in micro-batches of this many images, one optimizer
    # step; 0: the whole batch at once. Canonical: a micro-batch of the whole batch is 0.
    micro_batch: int = field(default=NO_MICRO_BATCH, metadata=lever("--micro-batch", "micro-batch {value}"))
    # The frozen encoder run first, apart from the trainable modules, K images at a time, with fused attention.
    lean_encoder: LeanEncoder = field(default="off", metadata=lever(
        "--lean-encoder", "lean encoder", get_args(LeanEncoder)))
    # K of the lean encoder (images per encoder forward); canonical: at most the images of one forward.
    encoder_chunk: int = field(default=1, metadata=lever("--encoder-chunk", "encoder chunk {value}"))

    KEY_SEPARATOR: ClassVar[str] = "/"

    def __post_init__(self) -> None:
        if not isinstance(self.method_options, str):
            raise ValueError(f"method_options must be text like 'rank=16', got {self.method_options!r}")
        check_batch_size(self.batch_size)
        if self.precision not in PRECISIONS:
            raise unknown_name_error("precision", self.precision, PRECISIONS)
        for f in self.lever_fields():
            if f.metadata["values"] and getattr(self, f.name) not in f.metadata["values"]:
                raise CadbenchError(f"unknown {f.name} {getattr(self, f.name)!r} ({f.metadata['flag']}); valid: "
                                    f"{', '.join(f.metadata['values'])}")
        self._check_micro_batch()
        self._check_encoder_chunk()

    def _check_micro_batch(self) -> None:
        micro = self.micro_batch
        if isinstance(micro, bool) or not isinstance(micro, int) or micro < 0:
            raise CadbenchError(f"--micro-batch must be a positive integer (or none), got {micro!r}")
        if micro > self.batch_size:
            raise CadbenchError(f"--micro-batch {micro} is larger than the batch size {self.batch_size}: a micro-batch "
                                f"is a part of the batch; valid for batch size {self.batch_size}: "
                                f"{', '.join(map(str, _divisors(self.batch_size)))}")
        if micro and self.batch_size % micro:
            raise CadbenchError(f"--micro-batch {micro} does not divide the batch size {self.batch_size}; valid for "
                                f"batch size {self.batch_size}: {', '.join(map(str, _divisors(self.batch_size)))}")
        if micro == self.batch_size:
            object.__setattr__(self, "micro_batch", NO_MICRO_BATCH)  # one micro-batch of all: the plain step

    def _check_encoder_chunk(self) -> None:
        chunk = self.encoder_chunk
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise CadbenchError(f"--encoder-chunk must be a positive integer, got {chunk!r}")
        if self.lean_encoder == "off" and chunk != 1:
            raise CadbenchError(f"--encoder-chunk {chunk} needs --lean-encoder on: only the lean encoder runs the "
                                f"encoder a chunk of images at a time")
        object.__setattr__(self, "encoder_chunk", min(chunk, self.images_per_pass))  # more than there are: all

    @property
    def images_per_pass(self) -> int:
        """Images in one forward and backward: the micro-batch, or the whole batch."""
        return self.micro_batch or self.batch_size

    @classmethod
    def lever_fields(cls) -> tuple:
        """The dataclass fields that are memory levers, in declared order."""
        return tuple(f for f in fields(cls) if f.metadata.get("lever"))

    @property
    def levers(self) -> dict[str, Any]:
        """The levers that differ from their defaults: {field: value}."""
        return {f.name: getattr(self, f.name) for f in self.lever_fields() if getattr(self, f.name) != _default(f)}

    @property
    def plain(self) -> "Cell":
        """The same cell with every lever at its default (its precision kept)."""
        return replace(self, **{f.name: _default(f) for f in self.lever_fields()})

    @property
    def lever_label(self) -> str:
        """The non-default levers for people: 'checkpointed encoder, micro-batch 2' ('' for none)."""
        return lever_label(self.as_dict())

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

    def further_labels(self) -> list[str]:
        """Every non-default dimension beyond the positional ones, for people: ['checkpointed encoder', ...]."""
        return [_describe(f, getattr(self, f.name)) for f in fields(self)
                if f.metadata.get("key") not in ("positional", "attached") and getattr(self, f.name) != _default(f)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lever_label(row: Mapping[str, Any]) -> str:
    """A result row's non-default levers for people, 'checkpointed encoder, micro-batch 2' ('' for none); a column
    missing from the row (written before that lever existed) means its default."""
    return ", ".join(_describe(f, value) for f in Cell.lever_fields()
                     if (value := _row_value(row, f)) != _default(f))


def _describe(f, value: Any) -> str:
    label = f.metadata.get("label")
    return label.format(value=value) if label else f"{f.name} {value}"


def _divisors(number: int) -> list[int]:
    return [size for size in range(1, number + 1) if number % size == 0]


def cell_key(row: Mapping[str, Any]) -> str:
    """The key of the cell a result row belongs to (see `Cell.key_of`)."""
    return Cell.key_of(row)


def check_batch_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CadbenchError(f"batch size must be a positive integer, got {value!r}")
    return value


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
    if f.type in ("int", int) and isinstance(value, float) and value.is_integer():
        value = int(value)  # a CSV column with empty cells is read as floats: 2.0 is the micro-batch 2
    return value


def _plain(value: Any) -> Any:
    """numpy scalars (rows read through pandas) as Python values."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value
