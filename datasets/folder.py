"""Datasets stored as image and mask files: pairing images with masks and checking every pair before use.

Everything that could stop a run half-way is checked when the dataset is opened, so bad input is refused before
any training starts: a missing folder, an image without a mask (or a mask without an image), an unreadable file or
one of an unsupported format, a mask whose size differs from its image's, an empty split. Masks without foreground
are allowed and counted.

Pairing: a mask belongs to the image of the same file stem (``a.jpg`` and ``a.png``) or, failing that, to the image
whose stem it extends by one of the common suffixes ``_mask``, ``_segmentation`` (ISIC), ``_gt`` or ``-mask``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadbench.datasets.dataset import MaskStats, SegmentationDataset, SubsetDataset
from cadbench.datasets.imagefiles import (
    FOREGROUND_ABOVE,
    binarize,
    describe_extra,
    image_size,
    list_folder,
    read_mask,
    read_mask_labels,
    read_mask_values,
    read_rgb,
    supported_extensions,
)
from cadbench.datasets.layouts import (
    FLAT_SPLIT,
    SplitFolders,
    find_split,
    held_out_source,
    missing_split_error,
    open_layout,
)
from cadbench.datasets.objects import NotObjectMask, label_objects, object_ids
from cadbench.errors import CadbenchError

MASK_SUFFIXES = ("_mask", "_segmentation", "_gt", "-mask")


@dataclass(frozen=True)
class Pair:
    stem: str
    image: Path
    mask: Path


def _mask_stem_for(image_stem: str, masks: dict[str, Path], image_path: Path) -> str | None:
    """The stem of `image_stem`'s mask: the same stem, else the stem plus one of `MASK_SUFFIXES`."""
    if image_stem in masks:
        return image_stem
    candidates = sorted(image_stem + suffix for suffix in MASK_SUFFIXES if image_stem + suffix in masks)
    if len(candidates) > 1:
        raise CadbenchError(f"image {image_path} has several masks: "
                            f"{', '.join(masks[stem].name for stem in candidates)}; keep one")
    return candidates[0] if candidates else None


def _mask_stems_of(image_stems, masks: dict[str, Path]) -> set[str]:
    return {stem + suffix for stem in image_stems for suffix in ("", *MASK_SUFFIXES)} & set(masks)


def pair_by_stem(folders: SplitFolders) -> list[Pair]:
    """Pair each image with its mask (see the module docstring); anything left unpaired is an error.

    When the masks folder is shared with other splits (CAMO's ``GT``), masks of those splits' images are skipped.
    """
    images = list_folder(folders.images, "images")
    masks = list_folder(folders.masks, "masks")
    if not images.files:
        skipped = f" (skipped, unsupported format: {summarize(images.unsupported)})" if images.unsupported else ""
        raise CadbenchError(f"split {folders.name!r} is empty: no image files in {folders.images}{skipped}")
    pairs, lonely_images = [], []
    for stem in sorted(images.files):
        mask_stem = _mask_stem_for(stem, masks.files, images.files[stem])
        if mask_stem is None:
            lonely_images.append(stem)
        else:
            pairs.append(Pair(stem, images.files[stem], masks.files[mask_stem]))
    if lonely_images:
        first = images.files[lonely_images[0]]
        unsupported = next((masks.unsupported[lonely_images[0] + suffix] for suffix in ("", *MASK_SUFFIXES)
                            if lonely_images[0] + suffix in masks.unsupported), None)
        if unsupported is not None:
            raise CadbenchError(f"mask {unsupported} of image {first.name} has the unsupported extension "
                                f"{unsupported.suffix!r}; masks must be one of {supported_extensions()}")
        raise CadbenchError(f"image {first} has no mask with the same stem (or the stem plus "
                            f"{', '.join(MASK_SUFFIXES)}) in {folders.masks}"
                            f"{describe_extra([images.files[stem] for stem in lonely_images])}")
    used = {pair.mask for pair in pairs}
    elsewhere = _mask_stems_of({stem for folder in folders.shared_with
                                for stem in list_folder(folder, "images").files}, masks.files)
    lonely_masks = [path for stem, path in masks.files.items() if path not in used and stem not in elsewhere]
    if lonely_masks:
        raise CadbenchError(f"mask {lonely_masks[0]} has no image with the same stem in {folders.images}"
                            f"{describe_extra(lonely_masks)}")
    return pairs


def summarize(paths: dict[str, Path]) -> str:
    return describe_extra([*paths.values()])[2:-1] if len(paths) > 1 else next(iter(paths.values())).name


@dataclass(frozen=True)
class PairCheck:
    foreground: bool
    colour: bool
    grey_levels: np.ndarray  # (256,) bool


def check_pair(pair: Pair, objects: bool = False) -> PairCheck:
    """Decode both files, compare sizes and describe the mask (`objects`: for the object protocol, where a 0/1 mask
    is a binary mask, not a mistake)."""
    height, width = image_size(pair.image)
    gray, colour = read_mask_values(pair.mask)
    if gray.shape != (height, width):
        raise CadbenchError(f"mask {pair.mask} is {gray.shape[1]}x{gray.shape[0]} but its image {pair.image.name} "
                            f"is {width}x{height} (width x height)")
    foreground = bool(binarize(gray).any())
    if not foreground and 0 < gray.max() <= 1 and not objects:
        raise CadbenchError(f"mask {pair.mask} holds only the values 0 and 1; masks must mark foreground with "
                            f"values above {FOREGROUND_ABOVE} (e.g. 255)")
    return PairCheck(foreground, colour, np.bincount(gray.ravel(), minlength=256) > 0)


def check_pairs(pairs: list[Pair], objects: bool = False) -> MaskStats:
    """`check_pair` over all pairs on a few threads (Pillow decodes without the GIL); the first bad pair in stem
    order is the one reported."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checks = list(pool.map(lambda pair: check_pair(pair, objects), pairs))
    return MaskStats(np.array([c.foreground for c in checks], bool), np.array([c.colour for c in checks], bool),
                     np.stack([c.grey_levels for c in checks]) if checks else np.zeros((0, 256), bool))


class FolderDataset(SegmentationDataset):
    """Checked image/mask pairs read from disk on demand."""

    def __init__(self, name: str, folders: SplitFolders, image_size: int, objects: bool = False) -> None:
        """`objects`: for the object protocol: every mask is also read for its objects here (a mask that is
        neither binary nor a label image is refused in one line naming it) and counted."""
        self.folders = folders
        self.pairs = pair_by_stem(folders)
        super().__init__(name, folders.name, image_size, [pair.stem for pair in self.pairs],
                         check_pairs(self.pairs, objects))
        if objects:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                self._object_counts = np.array(list(pool.map(lambda pair: len(object_ids(_labels(pair.mask))),
                                                             self.pairs)), dtype=np.int64)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[index]
        return read_rgb(pair.image), read_mask(pair.mask)

    def load_objects(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[index]
        return read_rgb(pair.image), _labels(pair.mask)


def _labels(path: Path) -> np.ndarray:
    """A mask file's object labels (datasets.objects), or one line naming the file."""
    try:
        return label_objects(read_mask_labels(path))
    except NotObjectMask as exc:
        raise CadbenchError(f"mask {path} is neither binary nor a label image: it {exc}") from None


def held_out_indices(count: int, fraction: float, seed: int) -> list[int]:
    """Which of `count` pairs (in stem order) are held out: round(count x fraction) of them, at least one and
    never all, drawn by a generator seeded with `seed`; sorted."""
    if count < 2:
        raise CadbenchError(f"cannot hold out a test split from {count} image(s); the dataset needs at least 2")
    held = min(count - 1, max(1, round(count * fraction)))
    return sorted(np.random.default_rng(seed).permutation(count)[:held].tolist())


def split_off(dataset: SegmentationDataset, fraction: float, seed: int, held_name: str, rest_name: str
              ) -> tuple[SubsetDataset, SubsetDataset]:
    """(rest, held out): a seeded share `fraction` of `dataset` held out under `held_name`."""
    held = held_out_indices(len(dataset), fraction, seed)
    rest = sorted(set(range(len(dataset))) - set(held))
    source = f"{dataset.split} ({dataset.origin})" if dataset.origin else dataset.split
    percent = f"{100 * fraction:g}%"
    return (SubsetDataset(dataset, rest, rest_name, f"the rest of {source!r} after {percent} held out, seed {seed}"),
            SubsetDataset(dataset, held, held_name, f"{percent} of {source!r} held out, seed {seed}"))


def open_dataset(path: str | Path, split: str | None, layout: str | None = None, image_size: int = 1024,
                 seed: int = 0, test_fraction: float = 0.0, objects: bool = False) -> SegmentationDataset:
    """Open one split of a dataset folder, detecting its layout unless `layout` names one.

    A dataset without a test split of its own (a flat images/ + masks/ folder, Kvasir-SEG, a train-only download)
    gets one when `test_fraction` > 0: that share of its train (or only) split, chosen by `seed`, is the test
    split and the rest the train split. Every pair is decoded and checked here (a few milliseconds per image), so
    bad input fails at once with a one-line `CadbenchError` naming the file or folder.
    """
    path = Path(path)
    name = path.name or str(path)
    chosen, splits = open_layout(path, layout)
    if split is None:
        if len(splits) > 1:
            raise CadbenchError(f"dataset folder {path} has several splits; choose one of {', '.join(splits)}")
        return FolderDataset(name, next(iter(splits.values())), image_size, objects)
    source = held_out_source(splits, test_fraction)
    if source is not None and split.lower() in ("train", "test"):
        rest, held = split_off(FolderDataset(name, splits[source], image_size, objects), test_fraction, seed, "test",
                               "train")
        return held if split.lower() == "test" else rest
    try:
        folders = find_split(splits, split)
    except CadbenchError as exc:
        raise CadbenchError(f"{path}: {exc}") from None
    if folders is None:
        raise missing_split_error(path, split, chosen, splits)
    return FolderDataset(name, folders, image_size, objects)


__all__ = ["FLAT_SPLIT", "FolderDataset", "MASK_SUFFIXES", "Pair", "held_out_indices", "open_dataset",
           "pair_by_stem", "split_off"]
