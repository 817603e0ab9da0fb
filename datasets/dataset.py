"""Samples, the dataset base class and batching, shared by folder datasets and the synthetic generator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cadbench.datasets.geometry import Augment, Geometry, Letterbox, content_box
from cadbench.datasets.batch import Batch
from cadbench.datasets.objects import (
    TRAIN_BOX_DISTORTION,
    ObjectTargets,
    choose_objects,
    label_objects,
    loosened_boxes,
    object_ids,
    object_targets,
)

LETTERBOX = Letterbox()


@dataclass
class Sample:
    """One image ready for SAM, plus what is needed to score its prediction at the original resolution."""

    name: str
    image: torch.Tensor  # (3, S, S) float32, raw pixels 0-255
    mask: torch.Tensor  # (1, S, S) float32, 0/1
    original_mask: np.ndarray  # (H, W) bool, the mask as stored
    valid_size: tuple[int, int]  # (h, w) of the image content inside the S x S input
    # The object protocol (--prompts-per-image N): the image's objects, every one (scoring) or the N prompted
    # (training); None: the whole-image protocol.
    objects: ObjectTargets | None = None

    @property
    def box(self) -> torch.Tensor:
        return content_box(self.valid_size)


@dataclass
class DatasetBatch:
    """Collated samples: the training tensors, one content box per image, and the originals for scoring."""

    images: torch.Tensor  # (B, 3, S, S)
    masks: torch.Tensor  # (B, 1, S, S); the object protocol: (B, N, S, S), one mask per prompted object
    boxes: torch.Tensor  # (B, 4) x0, y0, x1, y1 in input pixels; the object protocol: (B, N, 4), one per object
    original_masks: list[np.ndarray]
    valid_sizes: list[tuple[int, int]]
    names: list[str]

    @property
    def size(self) -> int:
        return self.images.shape[0]

    def training_batch(self) -> Batch:
        return Batch(self.images, self.masks, self.boxes if self.boxes.dim() == 3 else None)

    def to(self, device: torch.device | str) -> "DatasetBatch":
        return DatasetBatch(self.images.to(device), self.masks.to(device), self.boxes.to(device),
                            self.original_masks, self.valid_sizes, self.names)


def collate(samples: Sequence[Sample]) -> DatasetBatch:
    """Stack samples into a `DatasetBatch` (usable as a DataLoader `collate_fn`); samples of the object protocol
    (as many objects each) give their objects' masks and boxes."""
    objects = [s.objects for s in samples]
    with_objects = all(o is not None for o in objects) and bool(objects)
    return DatasetBatch(
        images=torch.stack([s.image for s in samples]),
        masks=torch.stack([o.masks for o in objects] if with_objects else [s.mask for s in samples]),
        boxes=torch.stack([o.boxes for o in objects] if with_objects else [s.box for s in samples]),
        original_masks=[s.original_mask for s in samples],
        valid_sizes=[s.valid_size for s in samples],
        names=[s.name for s in samples],
    )


@dataclass(frozen=True)
class MaskStats:
    """What the masks of a set of pairs hold, per pair: foreground or not, colour or not, which grey values.

    Kept per pair so that a part of a split (a held-out test or validation set) reports its own counts.
    """

    foreground: np.ndarray  # (N,) bool
    colour: np.ndarray  # (N,) bool: a colour mask, read by its brightest channel (datasets.imagefiles)
    grey_levels: np.ndarray  # (N, 256) bool: which 8-bit values each mask holds before thresholding

    @classmethod
    def binary(cls, count: int) -> "MaskStats":
        """`count` clean 0/255 masks, each with foreground (the synthetic set)."""
        levels = np.zeros((count, 256), bool)
        levels[:, [0, 255]] = True
        return cls(np.ones(count, bool), np.zeros(count, bool), levels)

    def subset(self, indices: Sequence[int]) -> "MaskStats":
        chosen = np.asarray(indices, dtype=np.int64)
        return MaskStats(self.foreground[chosen], self.colour[chosen], self.grey_levels[chosen])

    @property
    def empty(self) -> int:
        return int(np.count_nonzero(~self.foreground))

    @property
    def colour_masks(self) -> int:
        return int(np.count_nonzero(self.colour))

    @property
    def grey_values(self) -> int:
        """How many distinct grey values the masks hold together (2 for clean binary masks)."""
        return int(np.count_nonzero(self.grey_levels.any(axis=0)))


class SegmentationDataset(Dataset, ABC):
    """Binary segmentation pairs for an encoder of size `image_size`.

    Subclasses provide `load(index)` (the image and mask as stored); `sample(index, geometry, augment)` turns a
    pair into the model's input (by default, and for `dataset[i]`, SAM's letterbox geometry). `mask_stats` counts
    empty masks (allowed, reported with the results), colour masks and grey values.
    """

    def __init__(self, name: str, split: str, image_size: int, names: Sequence[str], mask_stats: MaskStats,
                 origin: str = "") -> None:
        self.name = name
        self.split = split
        self.image_size = image_size
        self.names = list(names)
        self.mask_stats = mask_stats
        self.origin = origin  # how the split was made, when not the dataset's own (e.g. "80% of 'all', seed 0")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def empty_masks(self) -> int:
        return self.mask_stats.empty

    @property
    def colour_masks(self) -> int:
        return self.mask_stats.colour_masks

    @property
    def grey_values(self) -> int:
        return self.mask_stats.grey_values

    @abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB image and (H, W) bool mask of the same size."""

    def load_objects(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB image and (H, W) int32 object labels (0: background; datasets.objects): by default
        the connected components of the binary mask."""
        image, mask = self.load(index)
        return image, label_objects(mask)

    def object_counts(self) -> np.ndarray:
        """(N,) distinct objects in each image (read once, then kept)."""
        if getattr(self, "_object_counts", None) is None:
            self._object_counts = np.array([len(object_ids(self.load_objects(i)[1])) for i in range(len(self))],
                                           dtype=np.int64)
        return self._object_counts

    def sample(self, index: int, geometry: Geometry = LETTERBOX, augment: Augment | None = None,
               objects: bool = False) -> Sample:
        """Pair `index` in `geometry`, augmented by `augment` (image and mask together) if given; `objects`: with
        every object of the image (`Sample.objects`), the mask being their union."""
        if not objects:
            image, mask = self.load(index)
            prepared = geometry.prepare(image, mask, self.image_size, augment)
            return Sample(self.names[index], prepared.image, prepared.mask, prepared.original_mask,
                          prepared.valid_size)
        image, labels = self.load_objects(index)
        prepared = geometry.prepare(image, labels, self.image_size, augment)
        targets = object_targets(prepared.mask, prepared.original_mask, prepared.valid_size)
        return Sample(self.names[index], prepared.image, (prepared.mask > 0).float(), prepared.original_mask > 0,
                      prepared.valid_size, targets)

    def __getitem__(self, index: int) -> Sample:
        return self.sample(index)

    def describe(self) -> dict[str, object]:
        """What a result row needs to say about the data."""
        return {"dataset": self.name, "split": self.split, "images": len(self), "empty_masks": self.empty_masks}

    def summary(self) -> str:
        """One phrase for people: 'kvasir-seg, test (20% of 'all', seed 0): 200 images, 1 empty mask, 37 grey
        values'."""
        split = f"{self.split} ({self.origin})" if self.origin else self.split
        parts = [f"{len(self)} images", _count(self.empty_masks, "empty mask")]
        if self.colour_masks:
            parts.append(_count(self.colour_masks, "colour mask") + " read by "
                         + ("its" if self.colour_masks == 1 else "their") + " brightest channel")
        parts.append(f"{self.grey_values} grey values")
        return f"{self.name}, {split}: {', '.join(parts)}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, images={len(self)}, "
                f"image_size={self.image_size}, empty_masks={self.empty_masks})")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


class SubsetDataset(SegmentationDataset):
    """Some pairs of another dataset, under a split name of their own (a held-out test or validation part)."""

    def __init__(self, base: SegmentationDataset, indices: Sequence[int], split: str, origin: str) -> None:
        self.base = base
        self.indices = list(indices)
        super().__init__(base.name, split, base.image_size, [base.names[i] for i in self.indices],
                         base.mask_stats.subset(self.indices), origin)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.base.load(self.indices[index])

    def load_objects(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.base.load_objects(self.indices[index])

    def object_counts(self) -> np.ndarray:
        return self.base.object_counts()[self.indices]


def images_with_objects(dataset: SegmentationDataset) -> tuple[SegmentationDataset, int]:
    """The object protocol's view of `dataset`: its images with at least one object (an image without any has
    nothing to prompt, and is skipped), and how many were skipped."""
    counts = dataset.object_counts()
    keep = np.flatnonzero(counts > 0).tolist()
    if len(keep) == len(dataset):
        return dataset, 0
    source = f"{dataset.split} ({dataset.origin})" if dataset.origin else dataset.split
    return (SubsetDataset(dataset, keep, dataset.split, f"the images of {source!r} with objects"),
            len(dataset) - len(keep))


def draw_numbers(batches: list[list[int]], length: int) -> list[list[int]]:
    """The batches of one epoch (or round) of a dataset of `length` images, each image's repeated draws numbered for
    `PreparedDataset`: the (k+1)-th draw of image i is i + k * length; first draws keep their index, so an epoch
    that shows each image once is unchanged."""
    drawn: Counter[int] = Counter()  # draws of each image so far, this one's included

    def number(index: int) -> int:
        drawn[index] += 1
        return index + (drawn[index] - 1) * length

    return [[number(index) for index in batch] for batch in batches]  # twice in one batch: two draws


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one sample's augmentation, a pure function of (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class PreparedDataset(Dataset):
    """A dataset seen through a protocol's geometry and augmentation, for one epoch.

    Augmentation draws from torch's global generator (as `torchvision.transforms.v2` does), re-seeded per sample
    from (seed, epoch, index) inside `torch.random.fork_rng`: the random transform of a sample depends neither on
    the order samples are read in, nor on DataLoader workers, nor on where an interrupted fine-tune resumed.

    An index past the end is a further draw of an image within the same epoch (a step-counted round shows each image
    many times): `index + k * len(self)` is image `index` drawn for the (k+1)-th time, with its own seed, so it gets
    its own objects, box jitter and augmentation (`draw_numbers` numbers them). Its first draw is plain `index`.
    """

    def __init__(self, base: SegmentationDataset, geometry: Geometry = LETTERBOX, augment: Augment | None = None,
                 seed: int = 0, epoch: int = 0, objects: int | str | None = None) -> None:
        """`objects`: None for the whole-image protocol; ALL_OBJECTS for every object of each image (scoring); N
        for exactly N objects per image (training; `choose_objects`, seeded per sample like the augmentation)."""
        self.base, self.geometry, self.augment, self.seed, self.epoch = base, geometry, augment, seed, epoch
        self.objects = objects

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[Sample]:
        """Each image's first draw (iterating by index would never stop: an index past the end is a further draw)."""
        return (self[index] for index in range(len(self)))

    def __getitem__(self, index: int) -> Sample:
        image = index % len(self.base)  # `index` itself seeds the draw (see the class docstring)
        if self.augment is None:
            return self._chosen(self.base.sample(image, self.geometry, objects=self.objects is not None), index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            sample = self.base.sample(image, self.geometry, self.augment, objects=self.objects is not None)
        return self._chosen(sample, index)

    def _chosen(self, sample: Sample, index: int) -> Sample:
        """The sample with its box prompts made as the field makes them (`datasets.objects.loosened_boxes`: the
        evaluation margin for every object; for training, also micro-sam's seeded outward jitter), and with exactly
        `objects` of its objects when a number is asked for (training)."""
        if sample.objects is None:
            return sample
        training = isinstance(self.objects, int)
        jitter_seed = int(np.random.SeedSequence([self.seed, self.epoch, index, 1]).generate_state(1)[0])
        boxes = loosened_boxes(sample.objects.boxes, sample.valid_size, sample.original_mask.shape,
                               distortion=TRAIN_BOX_DISTORTION if training else 0.0, seed=jitter_seed)
        found = sample.objects.with_boxes(boxes)
        sample = Sample(sample.name, sample.image, sample.mask, sample.original_mask, sample.valid_size, found)
        if not training:
            return sample
        if found.count == 0:  # every object lost to the geometry: empty targets prompted by the content box
            targets = ObjectTargets(torch.zeros(self.objects, *sample.mask.shape[-2:]),
                                    sample.box.expand(self.objects, 4).clone(),
                                    np.zeros((self.objects, *sample.original_mask.shape), bool))
        else:
            targets = found.chosen(choose_objects(found.count, self.objects, sample_seed(self.seed, self.epoch, index)))
        return Sample(sample.name, sample.image, sample.mask, sample.original_mask, sample.valid_size, targets)


ALL_OBJECTS = "all"  # PreparedDataset(objects=ALL_OBJECTS): every object of each image
