"""Optimizers and learning-rate schedules as typed, frozen specifications that a protocol names.

The harness builds them over a method's `trainable_parameters()`: no method implements an optimizer or a schedule.
Schedules are PyTorch's own (`torch.optim.lr_scheduler`), stepped once per epoch as both reference codes do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterable, Literal

import torch

from cadbench.training.protocol import LEARNING_RATE, build_optimizer


@dataclass(frozen=True)
class AdamW:
    """`torch.optim.AdamW` at `lr`, PyTorch's default betas and weight decay (0.01), as both references use it."""

    lr: float = LEARNING_RATE
    weight_decay: float = 0.01

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return build_optimizer(parameters, lr=self.lr, weight_decay=self.weight_decay)

    def describe(self) -> str:
        return f"AdamW, lr {self.lr:g}, weight decay {self.weight_decay:g}"


@dataclass(frozen=True)
class Constant:
    """The learning rate never changes."""

    kind: ClassVar[str] = "constant"

    def build(self, optimizer: torch.optim.Optimizer, batches_per_epoch: int, epochs: int
              ) -> torch.optim.lr_scheduler.LRScheduler | None:
        return None

    def describe(self) -> str:
        return "constant learning rate"


@dataclass(frozen=True)
class CosineAnnealing:
    """`torch.optim.lr_scheduler.CosineAnnealingLR`, stepped after every epoch, with `T_max` either the number of
    epochs or the number of batches in one epoch (what CAD's run_cad.py passes, while stepping per epoch)."""

    period: Literal["epochs", "batches_per_epoch"]
    eta_min: float = 0.0
    kind: ClassVar[str] = "cosine"

    def t_max(self, batches_per_epoch: int, epochs: int) -> int:
        return max(1, epochs if self.period == "epochs" else batches_per_epoch)

    def build(self, optimizer: torch.optim.Optimizer, batches_per_epoch: int, epochs: int
              ) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.t_max(batches_per_epoch, epochs),
                                                          eta_min=self.eta_min)

    def describe(self) -> str:
        period = "T_max = epochs" if self.period == "epochs" else "T_max = batches per epoch"
        return f"cosine annealing stepped per epoch ({period}, down to {self.eta_min:g})"


Schedule = Constant | CosineAnnealing
