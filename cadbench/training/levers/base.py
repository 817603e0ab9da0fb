"""What a memory lever is: a typed setting that changes the model or the step of any method that allows it.

A lever never lives in a method. The method declares capabilities (`Method.encoder_under_no_grad`,
`Method.backward_through_encoder`); the lever's declaration (`cadbench.vocabulary.levers`) reads them to say whether
it applies, and where it does, its behaviour here changes the built model or the step's plan in `apply`, the same way
for every method. `cadbench.training.setup.make_training_setup`
applies the cell's levers, so CUDA runs, CPU runs and the estimator's replay all get them from this code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from cadbench.errors import CadbenchError
from cadbench.training.plan import StepPlan, Trainee
from cadbench.vocabulary.cell import Cell


class LeverNotApplicable(CadbenchError):
    """A lever was asked of a method it cannot apply to (the harness records such a cell as not applicable)."""


@dataclass(frozen=True)
class Lever(ABC):
    """One lever, as set in a cell. Subclasses are frozen dataclasses of their settings."""

    field: ClassVar[str]  # the lever's name, as declared in cadbench.vocabulary.levers (its flag, label, rules)

    @classmethod
    @abstractmethod
    def from_cell(cls, cell: Cell) -> "Lever | None":
        """The lever as the cell sets it; None when the cell leaves it at its default (the plain step)."""

    @abstractmethod
    def apply(self, trainee: Trainee, plan: StepPlan) -> StepPlan:
        """Change the built model in place and/or return the step's plan changed; called before the batch exists.

        `trainee` holds the method (its levers applied so far) and the optimizer over its trainable parameters."""

    def rebatch(self, trainee: Trainee, plan: StepPlan) -> StepPlan:
        """Set what depends on the batch (a micro-batch, a chunk) on a model this lever was applied to, as set up
        for another batch size (the estimator reuses one built model for every batch size). Default: nothing."""
        return plan
