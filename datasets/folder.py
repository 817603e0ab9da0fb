"""Datasets stored as image and mask files: pairing by file stem and checking every pair before use.

Everything that could stop a run half-way is checked when the dataset is opened, so bad input is refused before
any training starts: a missing folder, an image without a mask (or a mask without an image), an unreadable file,
a mask whose size differs from its image's, an empty split. Masks without foreground are allowed and counted.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadbench.datasets.dataset import SegmentationDataset
from cadbench.datasets.imagefiles import (
    FOREGROUND_ABOVE,
    binarize,
    describe_extra,
    files_by_stem,
    image_size,
    read_gray_mask,
    read_mask,
    read_rgb,
)
from cadbench.datasets.layouts import SplitFolders, resolve_split
from cadbench.errors import CadbenchError


@dataclass(frozen=True)
class Pair:
    stem: str
    image: Path
    mask: Path


def pair_by_stem(folders: SplitFolders) -> list[Pair]:
    """Pair each image with the mask of the same file stem; anything left unpaired is an error.

    When the masks folder is shared with other splits (CAMO's ``GT``), masks of those splits' images are skipped.
    """
    images = files_by_stem(folders.images, "images")
    masks = files_by_stem(folders.masks, "masks")
    if not images:
        raise CadbenchError(f"split {folders.name!r} is empty: no image files in {folders.images}")
    lonely_images = [path for stem, path in images.items() if stem not in masks]
    if lonely_images:
        raise CadbenchError(f"image {lonely_images[0]} has no mask with the same stem in {folders.masks}"
                            f"{describe_extra(lonely_images)}")
    elsewhere = {stem for folder in folders.shared_with for stem in files_by_stem(folder, "images")}
    lonely_masks = [path for stem, path in masks.items() if stem not in images and stem not in elsewhere]
    if lonely_masks:
        raise CadbenchError(f"mask {lonely_masks[0]} has no image with the same stem in {folders.images}"
                            f"{describe_extra(lonely_masks)}")
    return [Pair(stem, images[stem], masks[stem]) for stem in sorted(images)]


def check_pair(pair: Pair) -> bool:
    """Decode both files and compare sizes; True when the mask has foreground."""
    height, width = image_size(pair.image)
    gray = read_gray_mask(pair.mask)
    if gray.shape != (height, width):
        raise CadbenchError(f"mask {pair.mask} is {gray.shape[1]}x{gray.shape[0]} but its image {pair.image.name} "
                            f"is {width}x{height} (width x height)")
    foreground = bool(binarize(gray).any())
    if not foreground and 0 < gray.max() <= 1:
        raise CadbenchError(f"mask {pair.mask} holds only the values 0 and 1; masks must mark foreground with "
                            f"values above {FOREGROUND_ABOVE} (e.g. 255)")
    return foreground


def check_pairs(pairs: list[Pair]) -> list[bool]:
    """`check_pair` over all pairs on a few threads (Pillow decodes without the GIL); the first bad pair in stem
    order is the one reported."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(check_pair, pairs))


class FolderDataset(SegmentationDataset):
    """Checked image/mask pairs read from disk on demand."""

    def __init__(self, name: str, folders: SplitFolders, image_size: int) -> None:
        self.folders = folders
        self.pairs = pair_by_stem(folders)
        empty = sum(not foreground for foreground in check_pairs(self.pairs))
        super().__init__(name, folders.name, image_size, [pair.stem for pair in self.pairs], empty)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[index]
        return read_rgb(pair.image), read_mask(pair.mask)


def open_dataset(path: str | Path, split: str | None, layout: str | None = None,
                 image_size: int = 1024) -> FolderDataset:
    """Open one split of a dataset folder, detecting its layout unless `layout` names one.

    Every pair is decoded and checked here (a few milliseconds per image), so bad input fails at once with a
    one-line `CadbenchError` naming the file or folder.
    """
    path = Path(path)
    folders = resolve_split(path, split, layout)
    return FolderDataset(path.name or str(path), folders, image_size)
