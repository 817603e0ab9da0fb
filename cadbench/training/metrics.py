"""Segmentation quality of thresholded and soft predictions, scored at the original mask resolution.

* IoU and Dice of the prediction thresholded at logit 0 (`protocol.MASK_THRESHOLD`), computed per image and averaged
  over images. Convention for empty sets: when neither the mask nor the prediction has foreground the image scores
  1 (nothing to find, nothing found); when only one of them is empty it scores 0.
* S-measure, mean E-measure, weighted F-measure and MAE, the camouflaged-object-detection metrics, computed by
  `py_sod_metrics` (PySODMetrics, the field's standard implementation) from the sigmoid probabilities as uint8
  0-255 maps, exactly as saved prediction PNGs are scored. Note that the library, like the MATLAB toolbox it
  follows, min-max stretches each prediction map before scoring. Mean E-measure is the mean over its 256
  thresholds. PySODMetrics' conventions hold for empty masks (weighted F-measure 0, S-measure 1 - mean prediction).
* BER, the shadow-detection balanced error rate in percent, 100 * (1 - (TP/Np + TN/Nn) / 2), from the thresholded
  prediction with TP, TN, Np, Nn summed over all images (the convention of shadow-detection evaluations), not
  averaged per image. When no image has a foreground (or a background) pixel, that term is left out.
"""

from __future__ import annotations

import numpy as np
import torch

from cadbench.training.protocol import MASK_THRESHOLD


def overlap_scores(prediction: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(IoU, Dice) of two boolean maps, with the empty-set convention of the module docstring."""
    intersection = np.count_nonzero(prediction & mask)
    predicted, actual = np.count_nonzero(prediction), np.count_nonzero(mask)
    if predicted + actual == 0:
        return 1.0, 1.0
    union = predicted + actual - intersection
    return intersection / union, 2.0 * intersection / (predicted + actual)


def balanced_error_rate(true_positive: int, true_negative: int, positives: int, negatives: int) -> float:
    """BER in percent; a class with no pixels is left out of the balance."""
    rates = []
    if positives:
        rates.append(true_positive / positives)
    if negatives:
        rates.append(true_negative / negatives)
    if not rates:
        raise ValueError("balanced error rate of zero pixels")
    return 100.0 * (1.0 - sum(rates) / len(rates))


def probability_map(logits: np.ndarray) -> np.ndarray:
    """Sigmoid probabilities as a uint8 0-255 map (rounded), the form PySODMetrics scores."""
    probabilities = 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))  # the sigmoid, without overflow
    return np.rint(probabilities * 255.0).astype(np.uint8)


def _as_2d_array(values: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values)
    if values.ndim > 2:
        values = values.reshape(values.shape[-2:]) if int(np.prod(values.shape[:-2])) == 1 else values
    if values.ndim != 2:
        raise ValueError(f"{what} must be one (H, W) map, got shape {values.shape}")
    return values


class SegmentationMetrics:
    """Accumulates one image at a time: `update(logits, mask)`, then `results()` for the dataset figures."""

    def __init__(self, soft: bool = True) -> None:
        """`soft=False` keeps IoU, Dice and BER only (cheap enough to score a validation set after every epoch)."""
        self.ious: list[float] = []
        self.dices: list[float] = []
        self.counts = np.zeros(4, dtype=np.int64)  # TP, TN, Np, Nn for BER
        self.soft = soft
        # Imported here, not at the top: py_sod_metrics imports scikit-learn, SciPy and pandas (about 1.3 s of CPU),
        # which a cell process that scores no quality (`--no-quality`, estimates, the CUDA tests) never needs.
        import py_sod_metrics

        self.s_measure = py_sod_metrics.Smeasure()
        self.e_measure = py_sod_metrics.Emeasure()
        self.weighted_f_measure = py_sod_metrics.WeightedFmeasure()
        self.mae = py_sod_metrics.MAE()

    @property
    def images(self) -> int:
        return len(self.ious)

    def update(self, logits: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> None:
        """Add one image: mask logits and the boolean ground truth, both (H, W) at the original resolution."""
        logits = _as_2d_array(logits, "logits")
        mask = _as_2d_array(mask, "mask").astype(bool)
        if logits.shape != mask.shape:
            raise ValueError(f"logits {logits.shape} and mask {mask.shape} differ in size; resize the logits first")
        prediction = logits > MASK_THRESHOLD
        iou, dice = overlap_scores(prediction, mask)
        self.ious.append(iou)
        self.dices.append(dice)
        positives = int(np.count_nonzero(mask))
        self.counts += (np.count_nonzero(prediction & mask), np.count_nonzero(~prediction & ~mask),
                        positives, mask.size - positives)
        if not self.soft:
            return
        soft, truth = probability_map(logits), mask.astype(np.uint8) * 255
        for metric in (self.s_measure, self.e_measure, self.weighted_f_measure, self.mae):
            metric.step(pred=soft, gt=truth)

    def results(self) -> dict[str, float | int]:
        """Means over the images so far (BER: over their summed pixel counts)."""
        if not self.images:
            raise ValueError("no images were scored")
        overlap = {"iou": float(np.mean(self.ious)), "dice": float(np.mean(self.dices)),
                   "ber": balanced_error_rate(*(int(c) for c in self.counts)), "images": self.images}
        if not self.soft:
            return overlap
        return {
            **overlap,
            "s_measure": float(self.s_measure.get_results()["sm"]),
            "mean_e_measure": float(self.e_measure.get_results()["em"]["curve"].mean()),
            "weighted_f_measure": float(self.weighted_f_measure.get_results()["wfm"]),
            "mae": float(self.mae.get_results()["mae"]),
        }
