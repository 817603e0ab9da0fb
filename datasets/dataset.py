"""Samples, the dataset base class and batching, shared by folder datasets and the synthetic generator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cadbench.datasets.geometry import content_box, image_to_input, mask_to_input, resized_shape
from cadbench.training.step import Batch


@dataclass
class Sample:
    """One image ready for SAM, plus what is needed to score its prediction at the original resolution."""

    name: str
    image: torch.Tensor  # (3, S, S) float32, raw pixels 0-255
    mask: torch.Tensor  # (1, S, S) float32, 0/1
    original_mask: np.ndarray  # (H, W) bool, the mask as stored
    valid_size: tuple[int, int]  # (h, w) of the image content inside the S x S input

    @property
    def box(self) -> torch.Tensor:
        return content_box(self.valid_size)


@dataclass
class DatasetBatch:
    """Collated samples: the training tensors, one content box per image, and the originals for scoring."""

    images: torch.Tensor  # (B, 3, S, S)
    masks: torch.Tensor  # (B, 1, S, S)
    boxes: torch.Tensor  # (B, 4) x0, y0, x1, y1 in input pixels
    original_masks: list[np.ndarray]
    valid_sizes: list[tuple[int, int]]
    names: list[str]

    @property
    def size(self) -> int:
        return self.images.shape[0]

    def training_batch(self) -> Batch:
        return Batch(self.images, self.masks)

    def to(self, device: torch.device | str) -> "DatasetBatch":
        return DatasetBatch(self.images.to(device), self.masks.to(device), self.boxes.to(device),
                            self.original_masks, self.valid_sizes, self.names)


def collate(samples: Sequence[Sample]) -> DatasetBatch:
    """Stack samples into a `DatasetBatch` (usable as a DataLoader `collate_fn`)."""
    return DatasetBatch(
        images=torch.stack([s.image for s in samples]),
        masks=torch.stack([s.mask for s in samples]),
        boxes=torch.stack([s.box for s in samples]),
        original_masks=[s.original_mask for s in samples],
        valid_sizes=[s.valid_size for s in samples],
        names=[s.name for s in samples],
    )


class SegmentationDataset(Dataset, ABC):
    """Binary segmentation pairs at encoder size `image_size`.

    Subclasses provide `load(index)` (the image and mask as stored); the SAM geometry is applied here.
    `empty_masks` counts masks without any foreground (allowed, reported with the results).
    """

    def __init__(self, name: str, split: str, image_size: int, names: Sequence[str], empty_masks: int) -> None:
        self.name = name
        self.split = split
        self.image_size = image_size
        self.names = list(names)
        self.empty_masks = empty_masks

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB image and (H, W) bool mask of the same size."""

    def __getitem__(self, index: int) -> Sample:
        image, mask = self.load(index)
        return Sample(
            name=self.names[index],
            image=image_to_input(image, self.image_size),
            mask=mask_to_input(mask, self.image_size),
            original_mask=mask,
            valid_size=resized_shape(image.shape[0], image.shape[1], self.image_size),
        )

    def describe(self) -> dict[str, object]:
        """What a result row needs to say about the data."""
        return {"dataset": self.name, "split": self.split, "images": len(self), "empty_masks": self.empty_masks}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, images={len(self)}, "
                f"image_size={self.image_size}, empty_masks={self.empty_masks})")
