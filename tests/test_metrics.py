"""Metrics against hand-computed values, and the camouflage metrics taken from py_sod_metrics itself."""

import math

import numpy as np
import py_sod_metrics
import pytest
import torch

from cadbench.training.metrics import SegmentationMetrics, balanced_error_rate, overlap_scores, probability_map

MASK = np.array([[1, 1, 0, 0],
                 [1, 1, 0, 0],
                 [0, 0, 0, 0]], dtype=bool)
PRED = np.array([[1, 0, 0, 0],
                 [1, 1, 1, 0],
                 [0, 0, 0, 0]], dtype=bool)


def logits_of(prediction: np.ndarray) -> np.ndarray:
    return np.where(prediction, 4.0, -4.0)


def test_iou_and_dice_by_hand():
    # |P & G| = 3, |P| = 4, |G| = 4, |P | G| = 5
    assert overlap_scores(PRED, MASK) == (3 / 5, 6 / 8)
    assert overlap_scores(MASK, MASK) == (1.0, 1.0)
    empty = np.zeros_like(MASK)
    assert overlap_scores(empty, empty) == (1.0, 1.0)  # nothing to find, nothing found
    assert overlap_scores(PRED, empty) == (0.0, 0.0)
    assert overlap_scores(empty, MASK) == (0.0, 0.0)


def test_ber_by_hand():
    # TP = 3 of Np = 4; TN = 7 of Nn = 8 -> 100 * (1 - (0.75 + 0.875) / 2) = 18.75
    metrics = SegmentationMetrics()
    metrics.update(logits_of(PRED), MASK)
    assert metrics.results()["ber"] == pytest.approx(18.75)
    # Summed over images, not averaged: second image all background, predicted all background.
    metrics.update(logits_of(np.zeros((2, 2), bool)), np.zeros((2, 2), bool))
    assert metrics.results()["ber"] == pytest.approx(100 * (1 - (3 / 4 + 11 / 12) / 2))
    assert balanced_error_rate(0, 5, 0, 5) == 0.0  # no foreground anywhere: the background term alone


def test_means_over_images_and_threshold_at_logit_zero():
    metrics = SegmentationMetrics()
    metrics.update(logits_of(PRED), MASK)
    metrics.update(logits_of(MASK), MASK)
    borderline = np.where(MASK, 1e-3, 0.0)  # logit 0 exactly is background, anything above is foreground
    metrics.update(borderline, MASK)
    results = metrics.results()
    assert results["images"] == 3
    assert results["iou"] == pytest.approx((0.6 + 1 + 1) / 3)
    assert results["dice"] == pytest.approx((0.75 + 1 + 1) / 3)


def test_camouflage_metrics_are_py_sod_metrics_on_uint8_probabilities():
    rng = np.random.default_rng(0)
    masks = [np.zeros((24, 32), bool) for _ in range(3)]
    masks[0][4:14, 6:20] = True
    masks[1][10:, :9] = True
    masks[2][3:5, 3:30] = True
    logits = [rng.normal(0, 2, size=m.shape) + 3 * m for m in masks]
    ours = SegmentationMetrics()
    reference = {"s_measure": py_sod_metrics.Smeasure(), "mean_e_measure": py_sod_metrics.Emeasure(),
                 "weighted_f_measure": py_sod_metrics.WeightedFmeasure(), "mae": py_sod_metrics.MAE()}
    for logit, mask in zip(logits, masks):
        ours.update(torch.from_numpy(logit)[None, None], mask)  # (1, 1, H, W) tensors are accepted too
        prediction = np.rint(255 / (1 + np.exp(-logit))).astype(np.uint8)
        for metric in reference.values():
            metric.step(pred=prediction, gt=mask.astype(np.uint8) * 255)
    results = ours.results()
    assert results["s_measure"] == pytest.approx(reference["s_measure"].get_results()["sm"])
    assert results["mean_e_measure"] == pytest.approx(reference["mean_e_measure"].get_results()["em"]["curve"].mean())
    assert results["weighted_f_measure"] == pytest.approx(reference["weighted_f_measure"].get_results()["wfm"])
    assert results["mae"] == pytest.approx(reference["mae"].get_results()["mae"])
    assert all(0 < results[key] < 1 for key in reference)


def test_perfect_prediction():
    metrics = SegmentationMetrics()
    metrics.update(np.where(MASK, 20.0, -20.0), MASK)
    results = metrics.results()
    assert results["s_measure"] == pytest.approx(1.0)
    assert results["mae"] == 0.0
    assert results["weighted_f_measure"] == pytest.approx(1.0)
    assert results["mean_e_measure"] > 0.99
    assert results["iou"] == results["dice"] == 1.0 and results["ber"] == 0.0


def test_probability_map_is_rounded_sigmoid_without_overflow():
    assert probability_map(np.array([-1e4, 0.0, 1e4])).tolist() == [0, 128, 255]
    assert probability_map(np.array([math.log(3)])).tolist() == [191]  # sigmoid = 0.75 -> 191.25


def test_bad_shapes_and_empty_results_are_programming_errors():
    metrics = SegmentationMetrics()
    with pytest.raises(ValueError, match="differ in size"):
        metrics.update(np.zeros((3, 4)), np.zeros((4, 3), bool))
    with pytest.raises(ValueError, match="no images"):
        metrics.results()


def test_overlap_only_scoring_gives_the_same_iou_dice_and_ber_without_the_soft_metrics():
    rng = np.random.default_rng(3)
    full, overlap = SegmentationMetrics(), SegmentationMetrics(soft=False)
    for _ in range(4):
        logits, mask = rng.normal(size=(20, 24)), rng.random((20, 24)) > 0.6
        full.update(logits, mask)
        overlap.update(logits, mask)
    cheap = overlap.results()
    assert set(cheap) == {"iou", "dice", "ber", "images"}
    assert all(cheap[key] == full.results()[key] for key in cheap)
