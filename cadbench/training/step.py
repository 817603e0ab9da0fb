"""One training step, written once for every method: forward, loss, backward, optimizer step."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import torch

from cadbench.backbones import BuiltSam, build_sam
from cadbench.harness.grid import Cell, Precision
from cadbench.methods import Method
from cadbench.registry import build_method
from cadbench.training.protocol import build_optimizer, segmentation_loss, upsample_logits

# The autocast dtype of each precision (names validated where a Cell is made: cadbench.harness.grid).
AUTOCAST_DTYPES: dict[Precision, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


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
    method: Method, optimizer: torch.optim.Optimizer, batch: Batch, precision: Precision = "fp32",
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step of the shared protocol; returns the (detached) loss without synchronising the device.

    `boxes` (B, 4) are the box prompts; by default each covers its whole image (padded dataset images pass the box
    around their content instead).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(batch.images.device, precision):
        logits = upsample_logits(method(batch.images, boxes), tuple(batch.masks.shape[-2:]))
        loss = segmentation_loss(logits, batch.masks)
    loss.backward()
    optimizer.step()
    return loss.detach()


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
    precision: Precision

    @property
    def module(self) -> torch.nn.Module:
        return self.trainee.method

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.trainee.optimizer

    def step(self) -> torch.Tensor:
        return training_step(self.trainee.method, self.trainee.optimizer, self.batch, self.precision)


def make_training_setup(
    cell: Cell, device: str | torch.device = "cpu", checkpoint: str | None = None, seed: int = 0,
) -> TrainingSetup:
    """The cell's model, optimizer and a random batch of `cell.batch_size` images, all on `device`."""
    torch.manual_seed(seed)
    trainee = prepare(cell.method_spec, cell.backbone, checkpoint=checkpoint, device=device)
    batch = random_batch(trainee.image_size, cell.batch_size, seed=seed, device=device)
    return TrainingSetup(trainee, batch, cell.precision)
