"""The order in which lever combinations count as cheaper, shared by `cadbench fit` (the advisor) and the report's
lever table, so both name the same combination when they see the same ones.

Cheaper means, in this order:

1. less extra compute: the FLOPs ratio against the plain fp32 step at the same batch size (the estimator's FLOPs;
   activation checkpointing re-runs the encoder's forward). Where a FLOPs figure is missing (rows measured on a
   GPU carry none), only whether the combination recomputes the encoder is compared;
2. less numerical change: fp32 before bf16 before fp16, then frozen weights kept in fp32 before bf16;
3. less serialisation: fewer micro-batches (accumulation costs no FLOPs but runs them one after the other), then
   fewer levers.
"""

from __future__ import annotations

from cadbench.vocabulary.cell import Cell, lever_label
from cadbench.vocabulary.precision import PRECISIONS

NUMERIC_RANK = {precision: rank for rank, precision in enumerate(PRECISIONS)}  # fp32, bf16, fp16


def passes(cell: Cell) -> int:
    """Forward and backward passes per optimizer step (micro-batches)."""
    return cell.batch_size // cell.images_per_pass


def cheapness(cell: Cell, flops_ratio: float | None) -> tuple:
    """Sort key: smaller is cheaper (see the module docstring). `flops_ratio`: the cell's FLOPs over the plain fp32
    step's, or None where unknown (compare like with like: all of a list known, or all None)."""
    compute = round(flops_ratio, 3) if flops_ratio is not None else float(cell.checkpointing != "none")
    return compute, NUMERIC_RANK[cell.precision], cell.frozen_dtype != "fp32", passes(cell), len(cell.levers)


def describe_levers(cell: Cell) -> str:
    """'bf16, checkpointed encoder, micro-batch 2'; 'none' for the plain fp32 step."""
    parts = [cell.precision] if cell.precision != "fp32" else []
    label = lever_label(cell.as_dict())
    return ", ".join([*parts, label] if label else parts) or "none"
