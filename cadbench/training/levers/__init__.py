"""Memory levers: the ways users make SAM fine-tuning fit, applied by the shared training setup to any method.

    levers_of(cell) -> list[Lever]          the cell's levers that differ from the plain step, in the order applied
    not_applicable(cell) -> str | None      why one of them cannot apply to the cell's method (the row's reason)
    apply_levers(cell, trainee) -> StepPlan  apply them to a built method (make_training_setup does this)
    rebatch(cell, trainee, plan) -> StepPlan  the cell's per-batch settings on a model built for another batch size
    available_levers() / get_lever(name)    the registry: lever name -> its behaviour's class

What a lever is, its flag, values and whether it applies to a method, is declared once in
`cadbench.vocabulary.levers`; this package holds what each lever does. Each behaviour is a frozen dataclass
(`base.Lever`) with `from_cell(cell)` and `apply(trainee, plan)`, in a module of its own: `precision` (bf16/fp16 autocast, loss scaling), `checkpointing` (the encoder's blocks),
`frozen_dtype` (frozen weights in bf16), `micro_batch` (gradient accumulation), `lean_encoder` (the frozen encoder
first, in chunks, with fused attention: `fused_attention`). Methods never implement a lever; they declare
capabilities (`encoder_under_no_grad`, `backward_through_encoder`) that each declaration's `applies_to` reads.
"""

from __future__ import annotations

from dataclasses import replace

from cadbench.backbones import get_backbone
from cadbench.errors import unknown_name_error
from cadbench.families import FAMILIES
from cadbench.registry import get_method
from cadbench.training.levers.base import Lever, LeverNotApplicable
from cadbench.training.levers.checkpointing import CheckpointedBlock, EncoderCheckpointing
from cadbench.training.levers.frozen_dtype import FrozenWeightsDtype
from cadbench.training.levers.lean_encoder import LeanFrozenEncoder
from cadbench.training.levers.micro_batch import MicroBatching
from cadbench.training.levers.precision import HalfPrecision
from cadbench.training.plan import StepPlan, Trainee
from cadbench.vocabulary.cell import NO_MICRO_BATCH, Cell
from cadbench.vocabulary.levers import lever_named

# In the order they are applied: the lean encoder swaps the attention modules' class before frozen_dtype
# parametrizes their weights (which gives them a class of its own), and checkpointing wraps the blocks last.
_LEVERS: tuple[type[Lever], ...] = (LeanFrozenEncoder, FrozenWeightsDtype, EncoderCheckpointing, HalfPrecision,
                                    MicroBatching)


def available_levers() -> dict[str, type[Lever]]:
    """Lever name -> its behaviour's class, in the order they are applied."""
    return {lever.field: lever for lever in _LEVERS}


def register_lever(behaviour: type[Lever], before: str | None = None) -> None:
    """Add the behaviour of a lever declared in `cadbench.vocabulary.levers` (a plugin's, or a test's), applied
    after the built-in ones, or before the one named."""
    global _LEVERS
    levers = [lever for lever in _LEVERS if lever.field != behaviour.field]
    index = next((i for i, lever in enumerate(levers) if lever.field == before), len(levers))
    _LEVERS = (*levers[:index], behaviour, *levers[index:])


def unregister_lever(name: str) -> None:
    global _LEVERS
    _LEVERS = tuple(lever for lever in _LEVERS if lever.field != name)


def get_lever(name: str) -> type[Lever]:
    levers = available_levers()
    if name not in levers:
        raise unknown_name_error("lever", name, levers)
    return levers[name]


def levers_of(cell: Cell) -> list[Lever]:
    """The levers the cell sets (those not at their defaults), in the order they are applied. A declared lever
    without a behaviour is refused here rather than silently doing nothing."""
    missing = sorted(name for name in cell.levers
                     if (lever_named(name).part_of or name) not in available_levers())
    if missing:
        raise ValueError(f"lever {', '.join(missing)} is declared but has no behaviour in cadbench.training.levers")
    return [lever for lever in (cls.from_cell(cell) for cls in _LEVERS) if lever is not None]


def not_applicable(cell: Cell) -> str | None:
    """Why the cell cannot run: its method has no definition on its backbone's model family ('sam_adapter is not
    defined on LiteMedSAM: ...'), or its levers cannot all apply to its method ('checkpointed encoder does not apply
    to cad: ...'); None when it can. The method decides the first (`Method.not_defined_on`), each lever's
    declaration the second, from the method's capabilities."""
    method_cls = get_method(cell.method)
    family = get_backbone(cell.backbone).family
    reason = method_cls.not_defined_on(family)
    if reason:
        return f"{cell.method_label} is not defined on {cell.backbone} ({FAMILIES[family].label}): {reason}"
    for name, value in cell.levers.items():
        declaration = lever_named(name)
        reason = declaration.applies_to(method_cls)
        if reason:
            return f"{declaration.describe(value)} does not apply to {cell.method_label}: {reason}"
    return None


def apply_levers(cell: Cell, trainee: Trainee) -> StepPlan:
    """Apply the cell's levers to the built method (in place) and return its step's plan. Raises
    LeverNotApplicable for a lever the method cannot take."""
    reason = not_applicable(cell)
    if reason:
        raise LeverNotApplicable(reason)
    plan = StepPlan(cell.precision)
    for lever in levers_of(cell):
        plan = lever.apply(trainee, plan)
    return plan


def rebatch(cell: Cell, trainee: Trainee, plan: StepPlan) -> StepPlan:
    """`cell`'s per-batch settings (micro-batch, encoder chunk) on a model built with the same levers for another
    batch size: what the estimator needs to measure several batch sizes on one built model."""
    plan = replace(plan, micro_batch=NO_MICRO_BATCH)
    for lever in levers_of(cell):
        plan = lever.rebatch(trainee, plan)
    return plan


__all__ = ["CheckpointedBlock", "EncoderCheckpointing", "FrozenWeightsDtype", "HalfPrecision", "LeanFrozenEncoder",
           "Lever", "LeverNotApplicable", "MicroBatching", "apply_levers", "available_levers", "get_lever",
           "levers_of", "not_applicable", "rebatch", "register_lever", "unregister_lever"]
