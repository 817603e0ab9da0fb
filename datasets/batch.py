"""A batch of images and their masks, as every dataset and the training step exchange them."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Raw-pixel images (B, 3, S, S), float 0-255, and 0/1 masks: (B, 1, H, W) with one whole-image box per image
    (`boxes` None), or (B, N, H, W) with `boxes` (B, N, 4), one box (x0, y0, x1, y1, input pixels) per object mask."""

    images: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.images.to(device), self.masks.to(device),
                     None if self.boxes is None else self.boxes.to(device))


def random_batch(image_size: int, batch_size: int, seed: int = 0, device: str | torch.device = "cpu",
                 prompts: int | None = None) -> Batch:
    """A reproducible batch of noise images and random square masks, for measuring cost (not quality): one mask per
    image (`prompts` None: the whole-image protocol), or `prompts` object masks per image with one box each.

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
    masks = torch.zeros(batch_size, prompts or 1, image_size, image_size, device=device)
    corners = []
    for index in range(batch_size):
        for obj in range(prompts or 1):
            side = rng.randrange(image_size // 8, image_size // 2)
            top, left = rng.randrange(0, image_size - side), rng.randrange(0, image_size - side)
            channel = slice(None) if prompts is None else obj
            masks[index, channel, top : top + side, left : left + side] = 1.0
            corners.append([float(left), float(top), float(left + side), float(top + side)])
    if prompts is None:
        return Batch(images, masks)
    return Batch(images, masks, torch.tensor(corners, device=device).view(batch_size, prompts, 4))
