"""One training step, written once for every method: forward, loss, backward, optimizer step.

How the step runs beyond the method is a `StepPlan`: the precision (autocast; fp16 with loss scaling), the
micro-batches of gradient accumulation, and the contexts levers enter around each forward and backward. The memory
levers (`cadbench.training.levers`) set it, and change the model, in `make_training_setup`; the step itself never
knows which lever asked for what, and the measurement code only ever calls `TrainingSetup.step`.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import Callable

import torch

from cadbench.backbones import BuiltSam, build_sam
from cadbench.methods import Method
from cadbench.registry import build_method
from cadbench.training.loss_scaling import loss_scaler
from cadbench.training.protocol import build_optimizer, segmentation_loss, upsample_logits
from cadbench.vocabulary.cell import NO_MICRO_BATCH, Cell
from cadbench.vocabulary.precision import Precision

# The autocast dtype of each precision (names validated where a Cell is made: cadbench.vocabulary.cell).
AUTOCAST_DTYPES: dict[Precision, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepPlan:
    """How one training step runs beyond the method (the plain step: fp32, the whole batch at once, no contexts)."""

    precision: Precision = "fp32"
    # Images per forward and backward (gradient accumulation: one optimizer step per batch); 0: the whole batch.
    micro_batch: int = NO_MICRO_BATCH
    # Context managers entered around the step's forward and backward passes (e.g. saved-tensor hooks).
    contexts: tuple[Callable[[], contextlib.AbstractContextManager], ...] = field(default=())


@dataclass
class Batch:
    """Raw-pixel images (B, 3, S, S), float 0-255, and 0/1 masks (B, 1, H, W)."""

    images: torch.Tensor
    masks: torch.Tensor

    @property
    def size(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.images.to(device), self.masks.to(device))


def random_batch(image_size: int, batch_size: int, seed: int = 0, device: str | torch.device = "cpu") -> Batch:
    """A reproducible batch of noise images and random square masks, for measuring cost (not quality).

    Made directly on `device` and without reading tensor values, so it also works under fake-tensor modes.
    """
    rng = random.Random(seed)
    generator = torch.Generator(device=torch.device(device) if torch.device(device).type != "meta" else "cpu")
    generator.manual_seed(seed)
    shape = (batch_size, 3, image_size, image_size)
    if torch.device(device).type == "meta":
        images = torch.empty(shape, device=device)
    else:
        images = torch.rand(shape, generator=generator, device=device).mul_(255.0)
    masks = torch.zeros(batch_size, 1, image_size, image_size, device=device)
    for index in range(batch_size):
        side = rng.randrange(image_size // 8, image_size // 2)
        top, left = rng.randrange(0, image_size - side), rng.randrange(0, image_size - side)
        masks[index, :, top : top + side, left : left + side] = 1.0
    return Batch(images, masks)


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def training_step(
    method: Method, optimizer: torch.optim.Optimizer, batch: Batch, precision: Precision | StepPlan = "fp32",
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step of the shared protocol; returns the (detached) loss without synchronising the device.

    `precision` is a precision name or a whole `StepPlan`. `boxes` (B, 4) are the box prompts; by default each covers
    its whole image (padded dataset images pass the box around their content instead).

    With micro-batches of m images out of B, each micro-batch's loss is scaled by m / B before its backward, so the
    accumulated gradient is the gradient of the whole batch's loss (the loss averages over images and pixels, and
    the micro-batches are equal), and the returned loss is the whole batch's. fp16 scales the loss with the
    optimizer's `GradScaler` (see loss_scaling) and skips the optimizer step when a gradient overflowed.
    """
    plan = precision if isinstance(precision, StepPlan) else StepPlan(precision)
    optimizer.zero_grad(set_to_none=True)
    scaler = loss_scaler(optimizer, batch.images.device) if plan.precision == "fp16" else None
    size = plan.micro_batch or batch.size
    with contextlib.ExitStack() as stack:
        for enter in plan.contexts:
            stack.enter_context(enter())
        if size >= batch.size:  # the plain step
            with autocast(batch.images.device, plan.precision):
                logits = upsample_logits(method(batch.images, boxes), tuple(batch.masks.shape[-2:]))
                loss = segmentation_loss(logits, batch.masks)
            _backward(loss, scaler)
            total = loss.detach()
        else:
            total = _accumulate(method, batch, boxes, plan.precision, size, scaler)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return total


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (loss if scaler is None else scaler.scale(loss)).backward()


def _accumulate(method: Method, batch: Batch, boxes: torch.Tensor | None, precision: Precision, size: int,
                scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """Forward and backward of each micro-batch of `size` images (views of the batch); their gradients add up.

    Each micro-batch's loss is weighted by its share of the batch, so a last, smaller micro-batch (an epoch's
    short last batch) counts for what it holds."""
    total = None
    for start in range(0, batch.size, size):
        images, masks = batch.images[start:start + size], batch.masks[start:start + size]
        weight = images.shape[0] / batch.size
        part_boxes = None if boxes is None else boxes[start:start + size]
        with autocast(batch.images.device, precision):
            logits = upsample_logits(method(images, part_boxes), tuple(masks.shape[-2:]))
            loss = segmentation_loss(logits, masks) * weight
        _backward(loss, scaler)
        total = loss.detach() if total is None else total + loss.detach()
        del logits, loss  # nothing of one micro-batch outlives its backward but the gradients
    return total


@dataclass
class Trainee:
    """A method ready to train: the wrapped model, its optimizer, and where its weights came from."""

    method: Method
    optimizer: torch.optim.Optimizer
    built: BuiltSam

    @property
    def image_size(self) -> int:
        return self.built.spec.image_size


def prepare(method_spec: str, backbone: str, checkpoint: str | None = None, device: str | torch.device = "cpu") -> Trainee:
    """Build the backbone, wrap it with the method ('cad', 'lora:rank=16'), and make the optimizer over the method's
    trainable parameters."""
    built = build_sam(backbone, checkpoint=checkpoint, device=device)
    with torch.device(device):
        method = build_method(method_spec, built.sam)
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
    def optimizer(self) -> torch.optim.Optimizer:
        return self.trainee.optimizer

    def step(self) -> torch.Tensor:
        return training_step(self.trainee.method, self.trainee.optimizer, self.batch, self.plan)


def prepare_cell(cell: Cell, checkpoint: str | None = None, device: str | torch.device = "cpu") -> tuple[Trainee,
                                                                                                       StepPlan]:
    """The cell's method with its levers applied (see cadbench.training.levers), and the plan of its step.

    Raises `LeverNotApplicable` (a CadbenchError) for a lever that cannot apply to the cell's method; the harness
    asks `levers.not_applicable(cell)` first and records such a cell as a row saying why.
    """
    from cadbench.training.levers import apply_levers

    trainee = prepare(cell.method_spec, cell.backbone, checkpoint=checkpoint, device=device)
    return trainee, apply_levers(cell, trainee)


def make_training_setup(
    cell: Cell, device: str | torch.device = "cpu", checkpoint: str | None = None, seed: int = 0,
) -> TrainingSetup:
    """The cell's model (levers applied), optimizer and a random batch of `cell.batch_size` images, all on
    `device`. The batch is made last: the estimator's allocation trace counts on it (allocation_trace)."""
    torch.manual_seed(seed)
    trainee, plan = prepare_cell(cell, checkpoint=checkpoint, device=device)
    batch = random_batch(trainee.image_size, cell.batch_size, seed=seed, device=device)
    return TrainingSetup(trainee, batch, plan)
