"""The assembly of a training step for a cell: build the backbone, wrap it with the method, apply the cell's levers,
make the optimizer and a batch. What the measurement code receives (`TrainingSetup`) runs one step without knowing
which method or lever it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cadbench.backbones import build_sam
from cadbench.datasets.batch import Batch, random_batch
from cadbench.registry import build_method
from cadbench.training.levers import apply_levers
from cadbench.training.plan import StepPlan, Trainee
from cadbench.training.protocol import build_optimizer
from cadbench.training.step import inference_step, training_step
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.precision import Precision
from cadbench.vocabulary.prompts import objects_per_image
from cadbench.vocabulary.resolution import NATIVE_IMAGE_SIZE


def prepare(method_spec: str, backbone: str, checkpoint: str | None = None, device: str | torch.device = "cpu",
            image_size: int = NATIVE_IMAGE_SIZE) -> Trainee:
    """Build the backbone for images of `image_size` pixels (0: its native size), wrap it with the method ('cad',
    'lora:rank=16'), and make the optimizer over the method's trainable parameters (none for a method that does
    not train)."""
    built = build_sam(backbone, checkpoint=checkpoint, device=device, image_size=image_size)
    with torch.device(device):
        method = build_method(method_spec, built.sam)
    if not method.trains:  # scored as built: evaluation mode, no optimizer
        return Trainee(method.eval(), None, built)
    method.train()
    return Trainee(method, build_optimizer(method.trainable_parameters()), built)


@dataclass
class TrainingSetup:
    """Everything one training step needs: what the measurement code runs, without knowing which method it is."""

    trainee: Trainee
    batch: Batch
    plan: StepPlan | Precision = field(default_factory=StepPlan)  # a precision name means the plain step at it

    def __post_init__(self) -> None:
        if isinstance(self.plan, str):
            self.plan = StepPlan(self.plan)

    @property
    def precision(self) -> Precision:
        return self.plan.precision

    @property
    def module(self) -> torch.nn.Module:
        return self.trainee.method

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.trainee.optimizer

    @property
    def trains(self) -> bool:
        """Whether the step trains (forward, backward, optimizer step) or is an inference step (a method that does
        not train: the forward under no_grad)."""
        return self.trainee.optimizer is not None

    def step(self) -> torch.Tensor:
        if not self.trains:
            return inference_step(self.trainee.method, self.batch, self.plan)
        return training_step(self.trainee.method, self.trainee.optimizer, self.batch, self.plan)


def prepare_cell(cell: Cell, checkpoint: str | None = None, device: str | torch.device = "cpu") -> tuple[Trainee,
                                                                                                       StepPlan]:
    """The cell's method with its levers applied (see cadbench.training.levers), and the plan of its step.

    Raises `LeverNotApplicable` (a CadbenchError) for a lever that cannot apply to the cell's method; the harness
    asks `levers.not_applicable(cell)` first and records such a cell as a row saying why.
    """
    trainee = prepare(cell.method_spec, cell.backbone, checkpoint=checkpoint, device=device,
                      image_size=cell.image_size)
    return trainee, apply_levers(cell, trainee)


def make_training_setup(
    cell: Cell, device: str | torch.device = "cpu", checkpoint: str | None = None, seed: int = 0,
) -> TrainingSetup:
    """The cell's model (levers applied), optimizer and a random batch of `cell.batch_size` images (with
    `cell.prompts_per_image` object masks and boxes each, unless the whole-image protocol), all on `device`. The
    batch is made last: the estimator's allocation trace counts on it (allocation_trace)."""
    torch.manual_seed(seed)
    trainee, plan = prepare_cell(cell, checkpoint=checkpoint, device=device)
    batch = random_batch(trainee.image_size, cell.batch_size, seed=seed, device=device,
                         prompts=objects_per_image(cell.prompts_per_image))
    return TrainingSetup(trainee, batch, plan)
