"""Input geometries. SAM's own (`Letterbox`, the default): longest side resized to the encoder size S, aspect kept,
padded bottom/right to S x S. The reference codes' (`Squash`): resized to a square, aspect ignored (below).

The resized shape comes from Meta's `ResizeLongestSide` and images are resized by its `apply_image` (what
`SamPredictor` feeds the model). Masks take the same shape with nearest-neighbour resampling.

Padding: SAM pads *after* its pixel normalisation, with zeros, so the model has always seen padding equal to the
normalised value 0. Images here stay raw 0-255 (methods normalise them), so the raw-pixel equivalent is used: the
padding holds SAM's pixel mean, which `Sam.preprocess` turns into exactly 0. Masks are padded with background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

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
    """(H, W) bool -> (1, S, S) float32 0/1, nearest-neighbour resized like its image, padding = background. An
    integer mask (object labels, datasets.objects) keeps its labels, as floats."""
    height, width = resized_shape(mask.shape[0], mask.shape[1], image_size)
    canvas = torch.zeros(1, image_size, image_size, dtype=torch.float32)
    if mask.dtype != bool:
        resized = Image.fromarray(mask.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST)
        canvas[0, :height, :width] = torch.from_numpy(np.asarray(resized).astype(np.float32))
        return canvas
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    canvas[0, :height, :width] = torch.from_numpy(np.asarray(resized) > 127).float()
    return canvas


def content_box(valid_size: tuple[int, int]) -> torch.Tensor:
    """The box prompt (x0, y0, x1, y1) in input pixels around the image content, padding excluded."""
    height, width = valid_size
    return torch.tensor([0.0, 0.0, float(width), float(height)])


# -- geometries: how a stored pair becomes the model's input, its training target and its scoring target ------------
# A training protocol (cadbench.training.protocols) chooses one. `Letterbox` is SAM's own (above); `Squash` is what
# the CAD and SAM-Adapter reference codes do: resize to a square, ignoring the aspect ratio.

Augment = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[tv_tensors.Image, tv_tensors.Mask]]


@dataclass(frozen=True)
class Prepared:
    """One pair in a protocol's geometry (the fields of `cadbench.datasets.Sample` except its name)."""

    image: torch.Tensor  # (3, S, S) float32, raw pixels 0-255: the encoder's input
    mask: torch.Tensor  # (1, h, w) float32 0/1 (object labels for a label mask): the training target (loss at h x w)
    original_mask: np.ndarray  # (H, W) bool (int32 labels): the scoring target (metrics are computed at H x W)
    valid_size: tuple[int, int]  # (h, w) of the content inside the S x S input (the box prompt)


def as_tv_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """(H, W, 3) uint8 and (H, W) bool -> torchvision's typed (3, H, W) uint8 image and (1, H, W) uint8 mask, so
    that `torchvision.transforms.v2` moves both together (masks with nearest-neighbour resampling). An integer mask
    (object labels) becomes an int32 one, its labels kept."""
    writable = ("C", "W")  # read-only arrays (cached synthetic scenes) are copied: torch wants writable memory
    dtype = torch.uint8 if mask.dtype == bool else torch.int32
    return (tv_tensors.Image(torch.from_numpy(np.require(image, requirements=writable)).permute(2, 0, 1)),
            tv_tensors.Mask(torch.from_numpy(np.require(mask, requirements=writable)).to(dtype)[None]))


def _as_stored(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A mask back in its stored kind: bool for a binary mask, int32 labels for an object-label mask."""
    return mask.astype(bool) if like.dtype == bool else mask.astype(np.int32)


@dataclass(frozen=True)
class Letterbox:
    """SAM's geometry: longest side to S, aspect kept, padded (see the module docstring); scored at the stored
    mask's own resolution, the way `Sam.postprocess_masks` maps predictions back. Augmentation, if any, applies to
    the stored pair first."""

    name: ClassVar[str] = "letterbox"

    def describe(self, image_size: int) -> str:
        return f"longest side to {image_size} px, padded; scored at each mask's own size"

    def prepare(self, image: np.ndarray, mask: np.ndarray, image_size: int, augment: Augment | None = None
                ) -> Prepared:
        if augment is not None:
            image_t, mask_t = augment(*as_tv_tensors(image, mask))
            image, mask = image_t.permute(1, 2, 0).numpy(), _as_stored(mask_t[0].numpy(), mask)
        return Prepared(image_to_input(image, image_size), mask_to_input(mask, image_size), mask,
                        resized_shape(image.shape[0], image.shape[1], image_size))


@dataclass(frozen=True)
class Squash:
    """Resize to a `fraction` x `fraction` share of the encoder size S, aspect ratio ignored; augment there; then
    resize the image to S x S for the encoder (bilinear). The training target and the scoring target are the mask
    at the squashed size, as in the reference codes (CAD: 512 px, SAM-Adapter: 1024 px at S = 1024).

    `antialias`: whether the squashing resize filters first (PIL / torchvision, as SAM-Adapter's
    `transforms.Resize` on PIL images) or samples (OpenCV's INTER_LINEAR, as CAD's albumentations `A.Resize`).
    `mask_sampling`: OpenCV's nearest neighbour (`nearest`: source pixel floor(i * scale)) or PIL's
    (`nearest-exact`: source pixel at the target pixel's centre).
    """

    fraction: float = 1.0
    antialias: bool = True
    mask_sampling: Literal["nearest", "nearest-exact"] = "nearest-exact"
    name: ClassVar[str] = "squash"

    def work_size(self, image_size: int) -> int:
        return max(1, round(image_size * self.fraction))

    def describe(self, image_size: int) -> str:
        size = self.work_size(image_size)
        upsampled = f", upsampled to {image_size} px for the encoder" if size != image_size else ""
        return f"squashed to {size} x {size} px{upsampled}; trained and scored at {size} x {size}"

    def prepare(self, image: np.ndarray, mask: np.ndarray, image_size: int, augment: Augment | None = None
                ) -> Prepared:
        size = self.work_size(image_size)
        image_t, mask_t = as_tv_tensors(image, mask)
        image_t = F.resize(image_t, [size, size], InterpolationMode.BILINEAR, antialias=self.antialias)
        sampling = InterpolationMode.NEAREST if self.mask_sampling == "nearest" else InterpolationMode.NEAREST_EXACT
        mask_t = F.resize(mask_t, [size, size], sampling)
        if augment is not None:
            image_t, mask_t = augment(image_t, mask_t)
        if size != image_size:
            image_t = F.resize(image_t, [image_size, image_size], InterpolationMode.BILINEAR, antialias=False)
        target = mask_t.as_subclass(torch.Tensor).float()
        return Prepared(image_t.as_subclass(torch.Tensor).float(), target, _as_stored(target[0].numpy(), mask),
                        (image_size, image_size))


Geometry = Letterbox | Squash
