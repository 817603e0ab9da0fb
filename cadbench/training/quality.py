"""Fine-tune a method on a dataset and evaluate it: the quality half of a result row.

Training uses the shared step (`cadbench.training.step.training_step`) with each image prompted by the box around its
content (padding excluded). Evaluation follows Meta's `Sam.postprocess_masks`: low-resolution logits are upsampled
to the encoder size, the padding is cropped, and the rest is resized to the original mask size, where the metrics
are computed (`cadbench.training.metrics`).
"""

from __future__ import annotations

import torch

from cadbench.datasets import DatasetBatch, SegmentationDataset, collate
from cadbench.errors import CadbenchError
from cadbench.methods import Method
from cadbench.training.metrics import SegmentationMetrics
from cadbench.training.protocol import upsample_logits
from cadbench.harness.grid import Precision
from cadbench.training.step import StepPlan, training_step


def _device(method: Method) -> torch.device:
    return next(method.parameters()).device


def _check_image_size(method: Method, dataset: SegmentationDataset) -> None:
    expected = method.sam.image_encoder.img_size
    if dataset.image_size != expected:
        raise CadbenchError(f"dataset {dataset.name!r} ({dataset.split}) is prepared for {dataset.image_size} px "
                            f"but the backbone takes {expected} px; open it with image_size={expected}")


def training_order(length: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Sample indices for each step: shuffled epochs, one after the other, reproducible from `seed`."""
    if length < 1:
        raise CadbenchError("cannot fine-tune on an empty dataset")
    generator = torch.Generator().manual_seed(seed)
    needed = steps * batch_size
    order: list[int] = []
    while len(order) < needed:
        order.extend(torch.randperm(length, generator=generator).tolist())
    return [order[step * batch_size:(step + 1) * batch_size] for step in range(steps)]


def fine_tune(method: Method, optimizer: torch.optim.Optimizer, train_dataset: SegmentationDataset, steps: int,
              batch_size: int, precision: Precision | StepPlan = "fp32", seed: int = 0) -> list[float]:
    """Train for `steps` steps of `batch_size` images; returns the loss of every step.

    `steps` and `batch_size` come validated from the run's options and its cell; `precision` is a precision name
    or the step plan of the cell's levers."""
    _check_image_size(method, train_dataset)
    device = _device(method)
    method.train()
    losses = []
    for indices in training_order(len(train_dataset), steps, batch_size, seed):
        batch = collate([train_dataset[i] for i in indices]).to(device)
        loss = training_step(method, optimizer, batch.training_batch(), precision, boxes=batch.boxes)
        losses.append(float(loss))
    return losses


def logits_at_original_size(logits: torch.Tensor, image_size: int, valid_size: tuple[int, int],
                            original_size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) low-resolution logits -> (H, W) logits at the mask's own resolution."""
    full = upsample_logits(logits.float(), (image_size, image_size))
    content = full[..., : valid_size[0], : valid_size[1]]
    return upsample_logits(content, tuple(original_size))[0, 0]


def predict(method: Method, batch: DatasetBatch, image_size: int) -> list[torch.Tensor]:
    """Per-image logits at the original mask resolution (no gradients)."""
    low_res = method(batch.images, batch.boxes)
    return [
        logits_at_original_size(low_res[i : i + 1], image_size, batch.valid_sizes[i], batch.original_masks[i].shape)
        for i in range(batch.size)
    ]


def evaluate(method: Method, test_dataset: SegmentationDataset, batch_size: int = 1) -> dict[str, float | int]:
    """Metrics over the whole dataset (see `cadbench.training.metrics`) plus the image and empty-mask counts."""
    _check_image_size(method, test_dataset)
    device = _device(method)
    was_training = method.training
    method.eval()
    metrics = SegmentationMetrics()
    try:
        with torch.no_grad():
            for start in range(0, len(test_dataset), batch_size):
                indices = range(start, min(start + batch_size, len(test_dataset)))
                batch = collate([test_dataset[i] for i in indices]).to(device)
                for logits, mask in zip(predict(method, batch, test_dataset.image_size), batch.original_masks):
                    metrics.update(logits, mask)
    finally:
        method.train(was_training)
    return {**metrics.results(), "empty_masks": test_dataset.empty_masks}
