"""Gradient accumulation: the batch (the effective batch) in micro-batches, one optimizer step per batch.

Applies to every method: it only changes how the shared step walks through the batch (see
`cadbench.training.step.training_step`: each micro-batch's loss is scaled so that the accumulated gradient is the
whole batch's). Memory is that of a micro-batch, plus the whole batch's input and the accumulated gradients;
throughput is counted per effective batch. One difference from the whole batch remains, and it is the method's:
BatchNorm (in cad's adapter) normalises each micro-batch by its own statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cadbench.training.levers.base import Lever


@dataclass(frozen=True)
class MicroBatching(Lever):
    field = "micro_batch"
    size: int  # images per forward and backward

    @classmethod
    def from_cell(cls, cell) -> "MicroBatching | None":
        return cls(cell.micro_batch) if cell.micro_batch else None

    def apply(self, trainee, plan):
        return replace(plan, micro_batch=self.size)

    rebatch = apply
