"""The splits a fine-tune uses: train, test and validation, from a folder or the synthetic set, opened once.

* test: the dataset's own test split; without one, a seeded `test_fraction` of its train (or only) split, the rest
  being the train split (`folder.open_dataset`).
* validation (scored after every epoch): a seeded `val_fraction` of train when asked for, else the dataset's own
  validation split (ISIC's), else the test split. It only draws the validation curve: the reported scores are
  those of the last epoch on the test split, never a choice of the best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadbench.datasets.dataset import SegmentationDataset
from cadbench.datasets.folder import FolderDataset, split_off
from cadbench.datasets.nuclei import NUCLEI_SAMPLE, NucleiSample
from cadbench.datasets.layouts import find_split, held_out_source, missing_split_error, open_layout
from cadbench.datasets.synthetic import SYNTHETIC, SyntheticCamouflage
from cadbench.errors import CadbenchError

VALIDATION_NAMES = ("validation", "val")


@dataclass
class Splits:
    train: SegmentationDataset
    test: SegmentationDataset
    validation: SegmentationDataset | None
    validation_source: str  # in words: "the test split", "10% of 'train' held out, seed 0", ...

    def summary(self) -> str:
        """What was trained and scored on, for the row's `quality_dataset`."""
        return f"{self.train.summary()}; {self.test.summary().split(', ', 1)[1]}"

    def split_description(self) -> str:
        """How the splits were made, for the row's `dataset_split`."""
        own = "the dataset's own"
        parts = [f"{dataset.split}: {dataset.origin or own}" for dataset in (self.train, self.test)]
        parts.append(f"validation: {self.validation_source}")
        return "; ".join(parts)

    @property
    def grey_values(self) -> int:
        """Distinct grey values over the masks of train and test together."""
        levels = np.concatenate([self.train.mask_stats.grey_levels, self.test.mask_stats.grey_levels])
        return int(np.count_nonzero(levels.any(axis=0)))


def _folder_pair(path: Path, image_size: int, layout: str | None, seed: int, test_fraction: float,
                 objects: bool = False) -> tuple[SegmentationDataset, SegmentationDataset, dict]:
    name = path.name or str(path)
    chosen, splits = open_layout(path, layout)
    source = held_out_source(splits, test_fraction)
    if source is not None:
        train, test = split_off(FolderDataset(name, splits[source], image_size, objects), test_fraction, seed, "test",
                                "train")
        return train, test, splits
    folders = {}
    for wanted in ("train", "test"):
        try:
            found = find_split(splits, wanted)
        except CadbenchError as exc:
            raise CadbenchError(f"{path}: {exc}") from None
        if found is None:
            raise missing_split_error(path, wanted, chosen, splits)
        folders[wanted] = found
    return (FolderDataset(name, folders["train"], image_size, objects),
            FolderDataset(name, folders["test"], image_size, objects), splits)


def open_splits(source: str, image_size: int, layout: str | None = None, seed: int = 0, test_fraction: float = 0.2,
                val_fraction: float = 0.0, objects: bool = False) -> Splits:
    """Train, test and validation of `source` ("synthetic", "nuclei-sample" or a dataset folder), each pair checked
    once.

    `objects`: for the object protocol (--prompts-per-image N): the synthetic set's scenes hold several objects, and
    every folder mask is also read for its objects (one that is neither binary nor a label image is refused here,
    in one line naming it)."""
    if source == SYNTHETIC:
        train: SegmentationDataset = SyntheticCamouflage("train", seed=seed, image_size=image_size, objects=objects)
        test: SegmentationDataset = SyntheticCamouflage("test", seed=seed, image_size=image_size, objects=objects)
        splits: dict = {}
    elif source == NUCLEI_SAMPLE:  # split by tile, fixed (datasets.nuclei): --test-fraction does not apply
        train, test = (NucleiSample(split, image_size=image_size, objects=objects) for split in ("train", "test"))
        splits = {}
    else:
        train, test, splits = _folder_pair(Path(source), image_size, layout, seed, test_fraction, objects)
    if val_fraction > 0:
        train, validation = split_off(train, val_fraction, seed, "validation", "train")
        return Splits(train, test, validation, validation.origin)
    own = next((folders for name, folders in splits.items() if name.lower() in VALIDATION_NAMES), None)
    if own is not None:
        return Splits(train, test, FolderDataset(train.name, own, image_size, objects),
                      "the dataset's own validation split")
    return Splits(train, test, test, "the test split (curve only: the scores are the last epoch's)")
