"""Objects of a mask, for the object protocol (`--prompts-per-image N`): which pixels make one object, their boxes,
and the N objects a training sample prompts.

The rule (stated in the README): a mask whose pixels hold at most one non-zero value is **binary**, and its objects
are its connected components, 8-connected (diagonal neighbours join; `scipy.ndimage.label`). A mask with several
non-zero values is a **label image**: each distinct non-zero value is one object, connected or not (micro-sam's
convention). A mask whose extra values lie only along edges (no pixel of them has its 3 x 3 neighbourhood all of
its own value, as anti-aliasing or resampling leaves on a binary mask) is neither, and is refused in one line.
How a file's values are read (8 or 16 bits, palette index, colour) is `datasets.imagefiles.read_mask_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# Box prompts as the field makes them (stated in the README; every row of the object protocol records both):
# * evaluation: the object's tight box plus a fixed margin on every side, in the stored image's pixels, clipped to
#   the image (the issue 26 probe: LiteMedSAM zero-shot mean IoU 0.58 with tight boxes, 0.62 with boxes 3 px looser,
#   while filling a tight box scored 0.73: a tight box gives its shape away);
# * training: the same box, then each edge moved outward by a seeded uniform share of the object's side, from 0 to
#   TRAIN_BOX_DISTORTION: micro-sam's `ConvertToSamInputs(box_distortion_factor=0.025)`, its `train_sam` default
#   (micro-sam rounds the moved edges to whole pixels; here they stay fractional, input pixels being resampled).
EVAL_BOX_MARGIN_PX = 3
TRAIN_BOX_DISTORTION = 0.025
TRAIN_BOX_JITTER = (f"each edge of the evaluation box moved outward by U(0, {TRAIN_BOX_DISTORTION}) x the object's "
                    "side, seeded per sample (micro-sam's box_distortion_factor)")


def loosened_boxes(boxes: torch.Tensor, valid_size: tuple[int, int], stored_size: tuple[int, int],
                   margin_px: float = EVAL_BOX_MARGIN_PX, distortion: float = 0.0,
                   seed: int | None = None) -> torch.Tensor:
    """(K, 4) tight boxes in input pixels -> the prompts: `margin_px` stored-image pixels added on every side, then
    (`distortion` > 0, with `seed`) each edge moved outward by U(0, distortion) x the tight box's side along it;
    clipped to the image content, (h, w) `valid_size` input pixels covering `stored_size` (H, W) stored pixels."""
    if boxes.numel() == 0:
        return boxes
    scale_y, scale_x = valid_size[0] / stored_size[0], valid_size[1] / stored_size[1]
    out = boxes.clone()
    out[:, [0, 2]] += torch.tensor([-margin_px * scale_x, margin_px * scale_x])
    out[:, [1, 3]] += torch.tensor([-margin_px * scale_y, margin_px * scale_y])
    if distortion > 0:
        sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, dim=1)  # w, h, w, h
        shares = torch.from_numpy(np.random.default_rng(seed).uniform(0.0, distortion, size=tuple(boxes.shape)))
        out += shares.float() * sides * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    out[:, [0, 2]] = out[:, [0, 2]].clamp(0.0, float(valid_size[1]))
    out[:, [1, 3]] = out[:, [1, 3]].clamp(0.0, float(valid_size[0]))
    return out


class NotObjectMask(ValueError):
    """A mask that is neither binary nor a label image (the caller names the file)."""


def label_objects(values: np.ndarray) -> np.ndarray:
    """(H, W) int32 object labels, 0 for background and 1..K, from a mask's values (see the module docstring).
    Raises `NotObjectMask` for a mask that is neither binary nor a label image."""
    from scipy import ndimage  # here: only the object protocol needs SciPy, and a cell process need not import it

    values = np.asarray(values)
    levels = np.unique(values)
    levels = levels[levels != 0]
    if len(levels) <= 1:
        labels, _count = ndimage.label(values != 0, structure=EIGHT_CONNECTED)
        return labels.astype(np.int32)
    main_level = max(levels, key=lambda level: np.count_nonzero(values == level))
    if all(not ndimage.binary_erosion(values == level, structure=EIGHT_CONNECTED).any()
           for level in levels if level != main_level):
        raise NotObjectMask(f"holds {len(levels) + 1} values, the extra ones only along edges (an anti-aliased or "
                            "resampled binary mask?): an object mask is binary (0 and one value) or a label image "
                            "(one value per object)")
    _, inverse = np.unique(values, return_inverse=True)
    labels = inverse.reshape(values.shape).astype(np.int32)  # 0 stays 0: it is the smallest value
    return labels if 0 in values else labels + 1


def object_ids(labels: np.ndarray) -> np.ndarray:
    """The objects' labels present in a label map, ascending."""
    ids = np.unique(labels)
    return ids[ids != 0]


def object_boxes(labels: np.ndarray, ids: np.ndarray, scale: tuple[float, float]) -> torch.Tensor:
    """(K, 4) boxes x0, y0, x1, y1 around each object of `labels`, pixel edges (x1 is one past the last column),
    multiplied by `scale` (y, x) into the encoder's input pixels."""
    boxes = []
    for index in ids:
        rows, cols = np.nonzero(labels == index)
        boxes.append([cols.min() * scale[1], rows.min() * scale[0], (cols.max() + 1) * scale[1],
                      (rows.max() + 1) * scale[0]])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def choose_objects(count: int, prompts: int, seed: int) -> list[int]:
    """Exactly `prompts` indices into `count` objects, seeded: distinct objects when there are enough; otherwise
    every object, then again, in seeded random orders, until there are `prompts` (each object repeated at most
    once more than any other). A step's memory is then that of `prompts` masks per image, whatever the image."""
    if count < 1:
        raise ValueError("no objects to choose from")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    while len(chosen) < prompts:
        chosen.extend(int(index) for index in rng.permutation(count))
    return chosen[:prompts]


@dataclass
class ObjectTargets:
    """Objects of one prepared sample: what training and scoring need of each."""

    masks: torch.Tensor  # (K, h, w) float 0/1: each object's training target
    boxes: torch.Tensor  # (K, 4): each object's box prompt, in input pixels
    original: np.ndarray  # (K, H, W) bool: each object's scoring target

    @property
    def count(self) -> int:
        return self.boxes.shape[0]

    def chosen(self, indices: list[int]) -> "ObjectTargets":
        return ObjectTargets(self.masks[indices], self.boxes[indices], self.original[indices])

    def with_boxes(self, boxes: torch.Tensor) -> "ObjectTargets":
        return ObjectTargets(self.masks, boxes, self.original)


def object_targets(target: torch.Tensor, original: np.ndarray, valid_size: tuple[int, int]) -> ObjectTargets:
    """The objects of a prepared label pair: `target` (1, h, w) labels (as floats) at the training target's size,
    `original` (H, W) labels at the scoring size, covering the `valid_size` (h, w) content of the input. Every
    object of the scoring target counts (one too small to survive the resize to the training target keeps its box
    and an empty training mask); boxes come from the scoring target, scaled into input pixels."""
    ids = object_ids(original)
    labels = target[0].round().to(torch.int64)
    masks = torch.stack([(labels == int(index)).float() for index in ids]) if len(ids) else \
        torch.zeros(0, *labels.shape)
    scale = (valid_size[0] / original.shape[0], valid_size[1] / original.shape[1])
    return ObjectTargets(masks, object_boxes(original, ids, scale),
                         np.stack([original == index for index in ids]) if len(ids) else
                         np.zeros((0, *original.shape), bool))
