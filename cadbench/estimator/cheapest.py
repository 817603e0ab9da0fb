"""The order in which lever combinations count as cheaper, shared by `cadbench fit` (the advisor) and the report's
lever table, so both name the same combination when they see the same ones.

Cheaper means, in this order:

1. less extra compute: the FLOPs ratio against the plain fp32 step at the same batch size (the estimator's FLOPs;
   activation checkpointing re-runs the encoder's forward). Where a FLOPs figure is missing (rows measured on a
   GPU carry none), the levers of the cost class "compute" are counted (whether the encoder is recomputed);
2. less numerical change: fp32 before bf16 before fp16, then the levers of the class "numerics" (frozen weights in
   bf16);
3. less serialisation: the class "serialisation" (micro-batches: accumulation costs no FLOPs but runs them one after
   the other, so each extra pass counts), then fewer levers.

Each lever's cost class is part of its declaration (cadbench.vocabulary.levers).
"""

from __future__ import annotations

from cadbench.vocabulary.cell import Cell, lever_label
from cadbench.vocabulary.levers import declared_levers
from cadbench.vocabulary.precision import PRECISIONS

NUMERIC_RANK = {precision: rank for rank, precision in enumerate(PRECISIONS)}  # fp32, bf16, fp16


def cost(cell: Cell, cost_class: str) -> float:
    """How much of a cost class ('compute', 'numerics', 'serialisation') the cell's levers add, by their
    declarations (cadbench.vocabulary.levers)."""
    return sum(lever.cost_amount(getattr(cell, lever.name), cell.batch_size) for lever in declared_levers()
               if lever.cost == cost_class)


def cheapness(cell: Cell, flops_ratio: float | None) -> tuple:
    """Sort key: smaller is cheaper (see the module docstring). `flops_ratio`: the cell's FLOPs over the plain fp32
    step's, or None where unknown (compare like with like: all of a list known, or all None)."""
    compute = round(flops_ratio, 3) if flops_ratio is not None else cost(cell, "compute")
    return (compute, NUMERIC_RANK[cell.precision], cost(cell, "numerics"), cost(cell, "serialisation"),
            len(cell.levers))


def describe_levers(cell: Cell) -> str:
    """'bf16, checkpointed encoder, micro-batch 2'; 'none' for the plain fp32 step."""
    parts = [cell.precision] if cell.precision != "fp32" else []
    label = lever_label(cell.as_dict())
    return ", ".join([*parts, label] if label else parts) or "none"
