"""SAM's input geometry: longest side resized to the encoder size S, aspect kept, padded bottom/right to S x S.

The resized shape comes from Meta's `ResizeLongestSide` and images are resized by its `apply_image` (what
`SamPredictor` feeds the model). Masks take the same shape with nearest-neighbour resampling.

Padding: SAM pads *after* its pixel normalisation, with zeros, so the model has always seen padding equal to the
normalised value 0. Images here stay raw 0-255 (methods normalise them), so the raw-pixel equivalent is used: the
padding holds SAM's pixel mean, which `Sam.preprocess` turns into exactly 0. Masks are padded with background.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from segment_anything.utils.transforms import ResizeLongestSide

# Sam's default pixel mean (the value of every official checkpoint and of the test-scale backbone).
PAD_PIXEL = (123.675, 116.28, 103.53)


def resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(h, w) of the image content inside the S x S input."""
    return ResizeLongestSide.get_preprocess_shape(height, width, image_size)


def image_to_input(image: np.ndarray, image_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, S, S) float32 raw pixels, content top-left, padding = SAM pixel mean."""
    resized = ResizeLongestSide(image_size).apply_image(image)
    height, width = resized.shape[:2]
    canvas = torch.tensor(PAD_PIXEL, dtype=torch.float32).view(3, 1, 1).repeat(1, image_size, image_size)
    canvas[:, :height, :width] = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float()
    return canvas


def mask_to_input(mask: np.ndarray, image_size: int) -> torch.Tensor:
    """(H, W) bool -> (1, S, S) float32 0/1, nearest-neighbour resized like its image, padding = background."""
    height, width = resized_shape(mask.shape[0], mask.shape[1], image_size)
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    canvas = torch.zeros(1, image_size, image_size, dtype=torch.float32)
    canvas[0, :height, :width] = torch.from_numpy(np.asarray(resized) > 127).float()
    return canvas


def content_box(valid_size: tuple[int, int]) -> torch.Tensor:
    """The box prompt (x0, y0, x1, y1) in input pixels around the image content, padding excluded."""
    height, width = valid_size
    return torch.tensor([0.0, 0.0, float(width), float(height)])
