"""Half precision: the step under autocast, bf16 or fp16; fp16 with loss scaling (cadbench.training.loss_scaling).

Applies to every method: autocast decides per op which dtype runs (CUDA's policy: matmuls and convolutions in the
half type, softmax, norms and the loss in float32), whatever the method. Parameters, gradients and optimizer states
stay float32. fp16 is for GPUs without bf16 (V100, T4, RTX 20-series).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cadbench.training.levers.base import Lever


@dataclass(frozen=True)
class HalfPrecision(Lever):
    field = "precision"
    dtype: str  # "bf16" | "fp16"

    @classmethod
    def from_cell(cls, cell) -> "HalfPrecision | None":
        return None if cell.precision == "fp32" else cls(cell.precision)

    def apply(self, trainee, plan):
        return replace(plan, precision=self.dtype)
