"""The words of a training step: how it runs beyond the method (`StepPlan`), and what it trains (`Trainee`).

Levers (`cadbench.training.levers`) read and return these; the step (`cadbench.training.step`) runs them; the
assembly (`cadbench.training.setup`) makes them for a cell.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from cadbench.backbones import BuiltSam
from cadbench.methods import Method
from cadbench.vocabulary.cell import NO_MICRO_BATCH
from cadbench.vocabulary.precision import Precision


@dataclass(frozen=True)
class StepPlan:
    """How one training step runs beyond the method (the plain step: fp32, the whole batch at once, no contexts)."""

    precision: Precision = "fp32"
    # Images per forward and backward (gradient accumulation: one optimizer step per batch); 0: the whole batch.
    micro_batch: int = NO_MICRO_BATCH
    # Context managers entered around the step's forward and backward passes (e.g. saved-tensor hooks).
    contexts: tuple[Callable[[], contextlib.AbstractContextManager], ...] = field(default=())


@dataclass
class Trainee:
    """A method ready to train: the wrapped model, its optimizer, and where its weights came from."""

    method: Method
    optimizer: torch.optim.Optimizer | None  # None: the method does not train (`Method.trains`)
    built: BuiltSam

    @property
    def image_size(self) -> int:
        """The side in pixels of the images the model takes (its cell's image size)."""
        return self.built.image_size
