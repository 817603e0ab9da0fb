"""The reference codes' augmentations, as `torchvision.transforms.v2` pipelines over an image and its mask together.

Every transform here takes a `tv_tensors.Image` (3, H, W) uint8 and a `tv_tensors.Mask` (1, H, W) and moves both
with the same random parameters; masks are always resampled nearest-neighbour, so they stay 0/1. Randomness comes
from torch's global generator, which `cadbench.datasets.PreparedDataset` seeds per sample. Where each choice comes
from is cited in docs/protocols.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


class RandomRotate90(v2.Transform):
    """Rotate by k x 90 degrees (counter-clockwise), k drawn uniformly from {0, 1, 2, 3}: albumentations'
    `RandomRotate90` (k = 0 included, as there). Exact: no resampling."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(0, 4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        return tv_tensors.wrap(torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1)), like=inpt)


class ShiftScaleRotate(v2.Transform):
    """albumentations' `ShiftScaleRotate` with its defaults of the 1.4 releases the CAD code was written against:
    shift by up to 6.25% of the width and of the height, scale by 0.9-1.1, rotate by up to 45 degrees (one affine
    map about the centre), bilinear for the image and nearest for the mask, and **reflected borders**
    (OpenCV's BORDER_REFLECT_101, for the image and the mask alike).

    torchvision's affine fills uncovered pixels with a constant, so the border is made by reflection first: both
    inputs are padded by half their size with `padding_mode="reflect"` (which is BORDER_REFLECT_101), transformed
    about the same centre, and cropped back. Half the size is enough: with these limits no output pixel maps
    farther than 0.85 x the size from the centre.
    """

    def __init__(self, shift: float = 0.0625, scale: tuple[float, float] = (0.9, 1.1), degrees: float = 45.0) -> None:
        super().__init__()
        self.shift, self.scale, self.degrees = shift, scale, degrees

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        uniform = lambda low, high: float(torch.empty(()).uniform_(low, high))  # noqa: E731
        return {"angle": uniform(-self.degrees, self.degrees), "scale": uniform(*self.scale),
                "dx": uniform(-self.shift, self.shift), "dy": uniform(-self.shift, self.shift)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        height, width = inpt.shape[-2:]
        pad_y, pad_x = math.ceil(height / 2), math.ceil(width / 2)
        if pad_y >= height or pad_x >= width:  # reflection needs the padding smaller than the image
            pad_y, pad_x = height - 1, width - 1
        padded = F.pad(inpt, [pad_x, pad_y, pad_x, pad_y], padding_mode="reflect")
        interpolation = InterpolationMode.NEAREST if isinstance(inpt, tv_tensors.Mask) else InterpolationMode.BILINEAR
        moved = F.affine(padded, angle=params["angle"], translate=[params["dx"] * width, params["dy"] * height],
                         scale=params["scale"], shear=[0.0, 0.0], interpolation=interpolation)
        return F.center_crop(moved, [height, width])


def cad_augmentation() -> v2.Transform:
    """CAD (run_cad.py): with probability 0.5, one of horizontal flip, vertical flip, RandomRotate90 and
    ShiftScaleRotate, chosen uniformly (albumentations `OneOf`)."""
    return v2.RandomApply([v2.RandomChoice([v2.RandomHorizontalFlip(p=1.0), v2.RandomVerticalFlip(p=1.0),
                                            RandomRotate90(), ShiftScaleRotate()])], p=0.5)


def sam_adapter_augmentation() -> v2.Transform:
    """SAM-Adapter (datasets/wrappers.py, TrainDataset): a horizontal flip with probability 0.5."""
    return v2.RandomHorizontalFlip(p=0.5)


AUGMENTATIONS = {"none": None, "cad": cad_augmentation, "sam-adapter": sam_adapter_augmentation}
