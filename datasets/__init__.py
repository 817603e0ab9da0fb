"""Datasets for fine-tuning and evaluation (installed as `cadbench.datasets`).

* `open_dataset(path, split, layout=None, image_size=1024, seed=0, test_fraction=0.0)`: image/mask folders
  (layouts in `layouts`), every pair checked when opened; images and masks are paired by file stem (or the stem
  plus a common mask suffix).
* `SyntheticCamouflage(split, seed, image_size)`: the embedded default, generated from a seed, nothing on disk.
* `NucleiSample(split, image_size)` (`--dataset nuclei-sample`): real fluorescence nuclei, 256-px tiles of one
  bundled 512 x 512 image with its instance mask (`nuclei`; split by tile).
* `SAMPLE_PATH`: a tiny committed folder dataset (train/test) for tests and demos.
* `open_splits(source, image_size, ...)`: train, test and validation for a fine-tune (seeded splits where a
  dataset has none of its own; `splits`).

Samples come in a geometry (`geometry`: SAM's letterbox by default, or the reference codes' squash, which a training
protocol chooses; `PreparedDataset` applies one with an augmentation); `collate` batches them.
"""

from pathlib import Path

from cadbench.datasets.dataset import (
    DatasetBatch,
    MaskStats,
    PreparedDataset,
    Sample,
    SegmentationDataset,
    SubsetDataset,
    collate,
)
from cadbench.datasets.folder import FolderDataset, open_dataset
from cadbench.datasets.layouts import LAYOUTS, available_splits
from cadbench.datasets.nuclei import NUCLEI_SAMPLE, NucleiSample
from cadbench.datasets.splits import Splits, open_splits
from cadbench.datasets.synthetic import SYNTHETIC, SyntheticCamouflage

SAMPLE_PATH = Path(__file__).resolve().parent / "sample"


def load_dataset(source: str, split: str | None, image_size: int = 1024, layout: str | None = None,
                 seed: int = 0) -> SegmentationDataset:
    """``"synthetic"`` for the generated set (split train or test, from `seed`), ``"nuclei-sample"`` for the bundled
    nuclei tiles, anything else is a folder path."""
    if source == SYNTHETIC:
        return SyntheticCamouflage(split or "train", seed=seed, image_size=image_size)
    if source == NUCLEI_SAMPLE:
        return NucleiSample(split or "train", image_size=image_size)
    return open_dataset(source, split, layout=layout, image_size=image_size)


__all__ = [
    "LAYOUTS", "NUCLEI_SAMPLE", "NucleiSample", "SAMPLE_PATH",
    "SYNTHETIC", "DatasetBatch", "FolderDataset", "MaskStats", "PreparedDataset", "Sample",
    "SegmentationDataset", "SubsetDataset", "SyntheticCamouflage", "available_splits", "collate", "load_dataset",
    "open_dataset", "open_splits", "Splits",
]
