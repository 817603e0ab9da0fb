"""The memory levers, each declared once: everything the CLI, the grid, the rows, the advisor, "cheapest" and the report
know about a lever comes from its `LeverDeclaration` here. What a lever *does* to a model or a step is its behaviour,
in `cadbench.training.levers` (one module per lever, registered under the same name).

A lever's setting is part of a cell (`Cell.levers`): its key gains ``name=value`` when it differs from the default,
and each row has a column of the lever's name. A declaration says:

* its name (the cell's attribute and the row's column), flag, valid values (text levers) or that it takes positive
  integers (with an optional word for its default, 'none' for micro-batching), default, label and help;
* whether it applies to a method, from the method's capabilities (`encoder_under_no_grad`,
  `backward_through_encoder`), with the reason when it does not;
* the checks and canonical form that involve the rest of the cell (a micro-batch must divide the batch size; a
  micro-batch of the whole batch is no micro-batching) and the other lever it needs (an encoder chunk needs the lean
  encoder on);
* for `cadbench fit`: the values the advisor tries at a target batch, their strength (a stronger value never adds
  memory: the advisor's pruning assumes it), and the cost class "cheapest" ranks them by.

`declare_lever` adds one (a plugin, or a test); `declared_levers()` lists them in declaration order, which is the
order of their flags, columns and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from cadbench.errors import CadbenchError

NO_MICRO_BATCH = 0  # micro_batch's default: the whole batch in one forward and backward

# What a lever costs, for "cheapest" (cadbench.estimator.cheapest): extra compute (FLOPs), a numerical change, or
# serialisation (work run one part after another); "none": none of these.
CostClass = Literal["compute", "numerics", "serialisation", "none"]


def _always(method_cls: Any) -> str | None:
    return None


def _nothing(value: Any, batch_size: int, settings: Mapping[str, Any]) -> Any:
    return value


@dataclass(frozen=True)
class LeverDeclaration:
    """One memory lever: its words, its rules, and what the advisor knows of it."""

    name: str  # the Cell attribute and the row column
    flag: str  # the command-line flag
    default: Any  # the plain step's value
    label: str  # for people when not at its default; '{value}' is replaced by the value
    help: str  # the flag's help, without its default
    values: tuple[str, ...] = ()  # text levers: the valid values; () for a lever of positive integers
    default_word: str | None = None  # an integer lever's word for its default on the command line ('none')
    # Why the lever cannot apply to methods of this class (one sentence, read from its capabilities), or None.
    applies_to: Callable[[Any], str | None] = _always
    # The value checked against the cell's batch size and other settings, made canonical; raises CadbenchError.
    canonical: Callable[[Any, int, Mapping[str, Any]], Any] = _nothing
    needs: Mapping[str, Any] = field(default_factory=dict)  # other levers' values a non-default value requires
    needs_why: str = ""  # why, for the one-line refusal
    part_of: str | None = None  # a setting of another lever, whose behaviour reads it (the encoder chunk: the lean one)
    # How the batch is walked (a micro-batch, a chunk), not the model: the estimator sets it per batch size on one
    # model built at its warm-up batch (cadbench.training.levers.rebatch).
    per_batch: bool = False
    # The values the advisor tries at a target batch (the first is the default).
    advice_values: Callable[[int], tuple[Any, ...]] | None = None
    # How much memory a value removes, comparable between values at one batch size (higher: at least as much).
    strength: Callable[[Any, int], float] | None = None
    cost: CostClass = "none"
    # How much of its cost class a value adds (default: 1 when not at the default, else 0).
    cost_of: Callable[[Any, int], float] | None = None

    def describe(self, value: Any) -> str:
        return self.label.format(value=value)

    def check(self, value: Any, batch_size: int, settings: Mapping[str, Any]) -> Any:
        """The value checked (its type and values, then the declaration's own rule) and made canonical."""
        if self.values:
            if value not in self.values:
                raise CadbenchError(f"unknown {self.name} {value!r} ({self.flag}); valid: {', '.join(self.values)}")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0 or (value == 0 != self.default):
            words = f" (or {self.default_word})" if self.default_word else ""
            raise CadbenchError(f"{self.flag} must be a positive integer{words}, got {value!r}")
        return self.canonical(value, batch_size, settings)

    def parse_word(self, text: str) -> Any:
        """One command-line item as a value: text levers keep the text (checked when the cell is made), integer
        levers take integers and their default's word."""
        if self.values:
            return text
        if self.default_word and text.lower() == self.default_word:
            return self.default
        try:
            return int(text)
        except ValueError:
            words = f" or {self.default_word}" if self.default_word else ""
            raise CadbenchError(f"{self.flag} takes positive integers{words}, got {text!r}") from None

    def show(self, value: Any) -> str:
        """A value as the command line writes it ('none' for micro_batch 0)."""
        return self.default_word if self.default_word and value == self.default else str(value)

    def strength_of(self, value: Any, batch_size: int) -> float:
        if self.strength is not None:
            return self.strength(value, batch_size)
        return float(value != self.default)

    def cost_amount(self, value: Any, batch_size: int) -> float:
        if self.cost_of is not None:
            return self.cost_of(value, batch_size)
        return float(value != self.default)

    def tried_by_advisor(self, batch_size: int) -> tuple[Any, ...]:
        return (self.default,) if self.advice_values is None else self.advice_values(batch_size)


_DECLARED: dict[str, LeverDeclaration] = {}


def declare_lever(declaration: LeverDeclaration) -> LeverDeclaration:
    """Add a lever (its name must be new); returns it."""
    if declaration.name in _DECLARED:
        raise ValueError(f"lever {declaration.name!r} is declared already")
    _DECLARED[declaration.name] = declaration
    return declaration


def withdraw_lever(name: str) -> None:
    """Remove a declared lever (a test's, when it is done)."""
    del _DECLARED[name]


def declared_levers() -> tuple[LeverDeclaration, ...]:
    """Every lever, in declaration order."""
    return tuple(_DECLARED.values())


def lever_named(name: str) -> LeverDeclaration | None:
    return _DECLARED.get(name)


def divisors(number: int) -> list[int]:
    return [size for size in range(1, number + 1) if number % size == 0]


# -- the built-in levers, in the order of their flags and columns ---------------------------------------------------

def _needs_backward_through_encoder(method_cls: Any) -> str | None:
    if method_cls.encoder_under_no_grad:
        return ("its image encoder runs under no_grad and keeps no activations for backward: there is nothing to "
                "recompute")
    if not method_cls.backward_through_encoder:
        return "gradients do not flow through its image encoder: there is nothing to recompute"
    return None


def _needs_no_grad_encoder(method_cls: Any) -> str | None:
    if not method_cls.encoder_under_no_grad:
        return ("its image encoder is part of what trains (backward runs through it): it cannot run apart, before "
                "the trainable modules")
    return None


def _needs_training(method_cls: Any) -> str | None:
    if not method_cls.trains:
        return "it does not train: there is no gradient to accumulate"
    return None


def _canonical_micro_batch(micro: int, batch_size: int, settings: Mapping[str, Any]) -> int:
    if micro > batch_size:
        raise CadbenchError(f"--micro-batch {micro} is larger than the batch size {batch_size}: a micro-batch is a "
                            f"part of the batch; valid for batch size {batch_size}: "
                            f"{', '.join(map(str, divisors(batch_size)))}")
    if micro and batch_size % micro:
        raise CadbenchError(f"--micro-batch {micro} does not divide the batch size {batch_size}; valid for batch size "
                            f"{batch_size}: {', '.join(map(str, divisors(batch_size)))}")
    return NO_MICRO_BATCH if micro == batch_size else micro  # one micro-batch of all: the plain step


def _canonical_encoder_chunk(chunk: int, batch_size: int, settings: Mapping[str, Any]) -> int:
    return min(chunk, settings.get("micro_batch") or batch_size)  # more than one forward holds: all of them


def _passes(micro: int, batch_size: int) -> float:
    """Extra forward and backward passes per optimizer step."""
    return float(batch_size // (micro or batch_size) - 1)


CHECKPOINTING = declare_lever(LeverDeclaration(
    name="checkpointing", flag="--checkpointing", default="none", values=("none", "encoder"),
    label="checkpointed {value}",
    help="activation checkpointing: none, or encoder (every image-encoder block recomputed in backward; for methods "
         "that back-propagate through the encoder)",
    applies_to=_needs_backward_through_encoder,
    advice_values=lambda batch: ("none", "encoder"), cost="compute"))
FROZEN_DTYPE = declare_lever(LeverDeclaration(
    name="frozen_dtype", flag="--frozen-dtype", default="fp32", values=("fp32", "bf16"),
    label="frozen weights {value}",
    help="storage dtype of the frozen weights: fp32, or bf16 (trainable weights, gradients and optimizer states stay "
         "fp32)",
    advice_values=lambda batch: ("fp32", "bf16"), cost="numerics"))
MICRO_BATCH = declare_lever(LeverDeclaration(
    name="micro_batch", flag="--micro-batch", default=NO_MICRO_BATCH, default_word="none",
    label="micro-batch {value}",
    help="gradient accumulation: the batch size is the effective batch, run in micro-batches of N images with one "
         "optimizer step; none: the whole batch at once",
    canonical=_canonical_micro_batch, per_batch=True, applies_to=_needs_training,
    advice_values=lambda batch: (NO_MICRO_BATCH, *reversed(divisors(batch)[:-1])),
    strength=lambda micro, batch: -float(micro or batch),  # fewer images per pass: less memory
    cost="serialisation", cost_of=_passes))
LEAN_ENCODER = declare_lever(LeverDeclaration(
    name="lean_encoder", flag="--lean-encoder", default="off", values=("off", "on"), label="lean encoder",
    help="off, or on: a no_grad image encoder (decoder_only, cad) runs first, --encoder-chunk images at a time, with "
         "fused attention (scaled_dot_product_attention)",
    applies_to=_needs_no_grad_encoder, advice_values=lambda batch: ("off", "on")))
ENCODER_CHUNK = declare_lever(LeverDeclaration(
    name="encoder_chunk", flag="--encoder-chunk", default=1, label="encoder chunk {value}",
    help="images per forward of the lean encoder (with --lean-encoder on)",
    canonical=_canonical_encoder_chunk, needs={"lean_encoder": "on"},
    needs_why="only the lean encoder runs the encoder a chunk of images at a time", per_batch=True,
    part_of="lean_encoder",
    strength=lambda chunk, batch: -float(chunk)))  # the advisor tries one image at a time: more only adds memory
