"""Score a method on a dataset: the quality half of a result row (fine-tuning is `cadbench.training.finetune`), and
that half as a row's part (`QualityMeasurement`, or `QualityElsewhere` for a cell its protocol does not fine-tune).

Each image is prompted by the box around its content (padding excluded); under the object protocol each object by
the box around it, scored against its own mask (scores are means over objects). Evaluation follows Meta's
`Sam.postprocess_masks`: low-resolution logits are upsampled to the encoder size, the padding is cropped, and the
rest is resized to the scoring target's size, where the metrics are computed (`cadbench.training.metrics`): the
stored mask's own size in SAM's letterbox geometry, the squashed size in the reference codes' (a protocol chooses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from segment_anything.modeling import Sam

from cadbench.datasets import DatasetBatch, PreparedDataset, Sample, SegmentationDataset, collate
from cadbench.datasets.dataset import ALL_OBJECTS, LETTERBOX
from cadbench.datasets.geometry import Geometry
from cadbench.datasets.objects import EVAL_BOX_MARGIN_PX, TRAIN_BOX_JITTER
from cadbench.errors import CadbenchError
from cadbench.methods import Method, ZeroShot
from cadbench.training.metrics import SegmentationMetrics
from cadbench.training.protocol import upsample_logits
from cadbench.training.weights import SAVED_WEIGHTS_COLUMNS
from cadbench.vocabulary.outcomes import RowPart

QUALITY_COLUMNS = ("iou", "dice", "s_measure", "mean_e_measure", "weighted_f_measure", "mae", "ber")  # the scores
# What a fine-tune records beside its scores (null exactly when the scores are, unless a reason says otherwise)
# The object protocol's (--prompts-per-image N): mean distinct objects per image, images skipped for having none,
# and the objects of the test split that the scores average over
OBJECT_COLUMNS = ("objects_per_image", "images_without_objects", "test_objects")
# The object protocol's prompts (datasets.objects) and its two references, scored on the same test objects with the
# same evaluation boxes: the backbone as built, no method and no training (zero-shot), and the prompt box itself
# filled in (box fill: what a model that has learnt nothing but "the object fills its box" would score).
REFERENCE_COLUMNS = ("eval_box_margin_px", "train_box_jitter", "zero_shot_iou", "zero_shot_dice", "box_fill_iou",
                     "box_fill_dice")
FINE_TUNE_COLUMNS = ("quality_dataset", "train_steps", "epochs", "dataset_split", "empty_train_masks",
                     "empty_test_masks", "mask_grey_values", *OBJECT_COLUMNS, *REFERENCE_COLUMNS,
                     *SAVED_WEIGHTS_COLUMNS)
WHOLE_IMAGE_REASON = "the whole-image protocol (--prompts-per-image image) prompts no objects"


@dataclass(frozen=True)
class QualityMeasurement(RowPart):
    """A cell's quality: the test split's scores after a fine-tune under a protocol, what the fine-tune trained on
    and how long, and its loss curve (side data). Saved weights are a part of their own (`weights.SavedWeights`)."""

    scores: Mapping[str, float | int]  # `evaluate`'s figures: every one of QUALITY_COLUMNS, and more
    protocol: str  # the protocol's name
    dataset: str  # the dataset and its splits, for people (`DatasetSplits.summary`)
    split: str  # how it was split (`DatasetSplits.split_description`)
    train_steps: int  # steps the fine-tune took
    epochs: int | None  # its epochs; None: the protocol counts steps
    empty_train_masks: int
    empty_test_masks: int
    mask_grey_values: int  # distinct grey values over the masks of train and test together
    loss_curve: Mapping[str, Any]  # the losses and the validation after each epoch, for the report
    # The object protocol: mean distinct objects per image of train and test (the images with objects), and the
    # images of train and test skipped for having none; None for the whole-image protocol.
    objects_per_image: float | None = None
    images_without_objects: int | None = None
    # The object protocol: its prompts and references (REFERENCE_COLUMNS), None for the whole-image protocol.
    references: Mapping[str, Any] | None = None
    # Why nothing was fine-tuned, for a method that does not train (zero_shot: scored as built); '' otherwise.
    untrained: str = ""

    def columns(self) -> dict[str, Any]:
        return {**{column: self.scores[column] for column in QUALITY_COLUMNS}, "quality_dataset": self.dataset,
                "dataset_split": self.split, "train_steps": self.train_steps, "epochs": self.epochs,
                "empty_train_masks": self.empty_train_masks, "empty_test_masks": self.empty_test_masks,
                "mask_grey_values": self.mask_grey_values, "objects_per_image": self.objects_per_image,
                "images_without_objects": self.images_without_objects,
                "test_objects": self.scores.get("objects") if self.objects_per_image is not None else None,
                **{column: (self.references or {}).get(column) for column in REFERENCE_COLUMNS}}

    def null_reasons(self) -> dict[str, str]:
        reasons = {} if self.objects_per_image is not None else dict.fromkeys(OBJECT_COLUMNS, WHOLE_IMAGE_REASON)
        if self.references is None:
            reasons.update(dict.fromkeys(REFERENCE_COLUMNS, WHOLE_IMAGE_REASON + " (zero-shot and box fill are "
                                                                                "scored per object)"))
        if self.untrained:
            return {**reasons, **dict.fromkeys(("epochs", *SAVED_WEIGHTS_COLUMNS), self.untrained)}
        if self.epochs is not None:
            return reasons
        return {**reasons, "epochs": f"the {self.protocol} protocol counts steps (train_steps), not epochs"}

    def side_data(self) -> dict[str, Any]:
        return {"_loss_curve": dict(self.loss_curve)} if not self.untrained else {}


@dataclass(frozen=True)
class QualityElsewhere(RowPart):
    """A cell whose protocol measures quality in another cell (a paper protocol fixes batch size and precision)."""

    reason: str  # which cell does (`Protocol.trains_cell`)

    def columns(self) -> dict[str, Any]:
        return dict.fromkeys((*QUALITY_COLUMNS, *FINE_TUNE_COLUMNS))

    def null_reasons(self) -> dict[str, str]:
        return dict.fromkeys((*QUALITY_COLUMNS, *FINE_TUNE_COLUMNS), self.reason)


def _device(method: Method) -> torch.device:
    return next(method.parameters()).device


def check_dataset_fits_model(method: Method, dataset: SegmentationDataset) -> None:
    expected = method.sam.image_encoder.img_size
    if dataset.image_size != expected:
        raise CadbenchError(f"dataset {dataset.name!r} ({dataset.split}) is prepared for {dataset.image_size} px "
                            f"but the backbone takes {expected} px; open it with image_size={expected}")


def logits_at_original_size(logits: torch.Tensor, image_size: int, valid_size: tuple[int, int],
                            original_size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w) low-resolution logits -> (H, W) logits at the mask's own resolution."""
    full = upsample_logits(logits.float(), (image_size, image_size))
    content = full[..., : valid_size[0], : valid_size[1]]
    return upsample_logits(content, tuple(original_size))[0, 0]


def predict(method: Method, batch: DatasetBatch, image_size: int) -> list[torch.Tensor]:
    """Per-image logits at the original mask resolution (no gradients)."""
    low_res = method(batch.images, batch.boxes)
    return [
        logits_at_original_size(low_res[i : i + 1], image_size, batch.valid_sizes[i], batch.original_masks[i].shape)
        for i in range(batch.size)
    ]


def predict_objects(method: Method, sample: Sample, image_size: int, device: torch.device) -> list[torch.Tensor]:
    """Per-object logits at the scoring resolution for one image of the object protocol: every object's box
    prompted in one mask-decoder call (no gradients)."""
    objects = sample.objects
    low_res = method(sample.image[None].to(device), objects.boxes[None].to(device))  # (1, K, h, w)
    return [logits_at_original_size(low_res[:, k : k + 1], image_size, sample.valid_size, objects.original[k].shape)
            for k in range(objects.count)]


def evaluate(method: Method, test_dataset: SegmentationDataset, batch_size: int = 1,
             geometry: Geometry = LETTERBOX, soft: bool = True, objects: bool = False) -> dict[str, float | int]:
    """Metrics over the whole dataset (see `cadbench.training.metrics`; `soft=False`: IoU, Dice and BER only),
    scored at the resolution of `geometry`'s scoring target (a protocol's), plus the image and empty-mask counts.

    `objects`: the object protocol: every object of every image is prompted by its box (all of an image's objects
    in one decoder call) and scored against its own mask, so each score is a mean over objects, as micro-sam reports
    them (`objects`: how many); an image without objects scores nothing."""
    check_dataset_fits_model(method, test_dataset)
    device = _device(method)
    was_training = method.training
    method.eval()
    metrics = SegmentationMetrics(soft=soft)
    view = PreparedDataset(test_dataset, geometry, objects=ALL_OBJECTS if objects else None)
    try:
        with torch.no_grad():
            if objects:
                for index in range(len(test_dataset)):
                    sample = view[index]
                    if sample.objects.count == 0:
                        continue
                    for logits, mask in zip(predict_objects(method, sample, test_dataset.image_size, device),
                                            sample.objects.original):
                        metrics.update(logits, mask)
                if not metrics.images:
                    raise CadbenchError(f"no image of {test_dataset.summary()} has an object to score")
                return {**metrics.results(), "objects": metrics.images, "empty_masks": test_dataset.empty_masks}
            for start in range(0, len(test_dataset), batch_size):
                indices = range(start, min(start + batch_size, len(test_dataset)))
                batch = collate([view[i] for i in indices]).to(device)
                for logits, mask in zip(predict(method, batch, test_dataset.image_size), batch.original_masks):
                    metrics.update(logits, mask)
    finally:
        method.train(was_training)
    return {**metrics.results(), "empty_masks": test_dataset.empty_masks}


def box_fill_scores(test_dataset: SegmentationDataset, geometry: Geometry = LETTERBOX) -> dict[str, float | int]:
    """IoU, Dice and BER of predicting each object's evaluation box itself, filled (a pixel is predicted when its
    centre lies in the box, mapped back to the scoring target's pixels), on exactly the objects and boxes `evaluate`
    scores under the object protocol."""
    metrics = SegmentationMetrics(soft=False)
    view = PreparedDataset(test_dataset, geometry, objects=ALL_OBJECTS)
    for index in range(len(test_dataset)):
        sample = view[index]
        for box, mask in zip(sample.objects.boxes.tolist(), sample.objects.original):
            height, width = mask.shape
            scale_x, scale_y = width / sample.valid_size[1], height / sample.valid_size[0]
            cols, rows = np.arange(width) + 0.5, np.arange(height) + 0.5
            inside = (((rows >= box[1] * scale_y) & (rows < box[3] * scale_y))[:, None]
                      & ((cols >= box[0] * scale_x) & (cols < box[2] * scale_x))[None, :])
            metrics.update(np.where(inside, 1.0, -1.0), mask)
    if not metrics.images:
        raise CadbenchError(f"no image of {test_dataset.summary()} has an object to score")
    return {**metrics.results(), "objects": metrics.images}


def zero_shot_scores(sam: Sam, test_dataset: SegmentationDataset, geometry: Geometry = LETTERBOX
                     ) -> dict[str, float | int]:
    """`sam` as built, no method (`ZeroShot`), scored like any method on `test_dataset`'s objects, every metric:
    the object protocol's zero-shot reference, and what a zero_shot cell's row holds."""
    return evaluate(ZeroShot(sam), test_dataset, geometry=geometry, objects=True)


def reference_scores(zero_shot: Mapping[str, Any], test_dataset: SegmentationDataset,
                     geometry: Geometry = LETTERBOX) -> dict[str, Any]:
    """The object protocol's REFERENCE_COLUMNS: its prompts, zero-shot (`zero_shot`: `zero_shot_scores` on
    `test_dataset`, or the same scoring of a zero_shot cell) and box fill, on the same objects."""
    box_fill = box_fill_scores(test_dataset, geometry)
    return {"eval_box_margin_px": EVAL_BOX_MARGIN_PX, "train_box_jitter": TRAIN_BOX_JITTER,
            "zero_shot_iou": zero_shot["iou"], "zero_shot_dice": zero_shot["dice"],
            "box_fill_iou": box_fill["iou"], "box_fill_dice": box_fill["dice"]}
