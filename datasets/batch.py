"""A batch of images and their masks, as every dataset and the training step exchange them."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


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
