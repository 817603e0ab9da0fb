"""One training step, written once for every method: forward, loss, backward, optimizer step (and the inference
step of a method that does not train: the same forward under no_grad).

How the step runs beyond the method is a `StepPlan` (`cadbench.training.plan`): the precision (autocast; fp16 with
loss scaling), the micro-batches of gradient accumulation, and the contexts levers enter around each forward and
backward. The memory levers (`cadbench.training.levers`) set it, and change the model, when the cell is assembled
(`cadbench.training.setup`); the step itself never knows which lever asked for what, and the measurement code only
ever calls `TrainingSetup.step`.
"""

from __future__ import annotations

import contextlib

import torch

from cadbench.datasets.batch import Batch
from cadbench.methods import Method
from cadbench.training.loss_scaling import loss_scaler
from cadbench.training.plan import StepPlan
from cadbench.training.protocol import segmentation_loss, upsample_logits
from cadbench.vocabulary.precision import Precision

# The autocast dtype of each precision (names validated where a Cell is made: cadbench.vocabulary.cell).
AUTOCAST_DTYPES: dict[Precision, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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

    `precision` is a precision name or a whole `StepPlan`. `boxes` are the box prompts: (B, 4), one per image, by
    default (None, and the batch has none) each covering its whole image (padded dataset images pass the box around
    their content instead); or (B, N, 4), one per object mask of `batch.masks` (B, N, H, W), the batch's own
    `boxes` when not given. The loss averages over the N masks of each image (`segmentation_loss`).

    With micro-batches of m images out of B, each micro-batch's loss is scaled by m / B before its backward, so the
    accumulated gradient is the gradient of the whole batch's loss (the loss averages over images and pixels, and
    the micro-batches are equal), and the returned loss is the whole batch's. fp16 scales the loss with the
    optimizer's `GradScaler` (see loss_scaling) and skips the optimizer step when a gradient overflowed.
    """
    plan = precision if isinstance(precision, StepPlan) else StepPlan(precision)
    boxes = batch.boxes if boxes is None else boxes
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


def inference_step(method: Method, batch: Batch, plan: StepPlan | Precision = "fp32",
                   boxes: torch.Tensor | None = None) -> torch.Tensor:
    """The step of a method that does not train: the same forward as `training_step` (prompts, precision, the
    levers' contexts, logits upsampled to the masks and the loss, which it returns), under no_grad, with no backward
    and no optimizer. Its memory and time are those of inference on the batch."""
    plan = plan if isinstance(plan, StepPlan) else StepPlan(plan)
    boxes = batch.boxes if boxes is None else boxes
    with contextlib.ExitStack() as stack:
        for enter in plan.contexts:
            stack.enter_context(enter())
        with torch.no_grad(), autocast(batch.images.device, plan.precision):
            logits = upsample_logits(method(batch.images, boxes), tuple(batch.masks.shape[-2:]))
            return segmentation_loss(logits, batch.masks)


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (loss if scaler is None else scaler.scale(loss)).backward()


def _accumulate(method: Method, batch: Batch, boxes: torch.Tensor | None, precision: Precision, size: int,
                scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """Forward and backward of each micro-batch of `size` images (views of the batch: images, masks and boxes
    sliced alike, all the objects of an image in its micro-batch); their gradients add up.

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
