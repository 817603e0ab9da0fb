"""Evaluate (and fine-tune, end to end) on the committed sample, at test scale, for every method."""

import math

import pytest
import torch

from cadbench.datasets import SAMPLE_PATH, SyntheticCamouflage, open_dataset
from cadbench.errors import CadbenchError
from cadbench.training.finetune import TrainingPlan, fine_tune
from cadbench.training.protocols import get_protocol
from cadbench.training.quality import evaluate, logits_at_original_size
from cadbench.training.setup import prepare


def quick(steps: int, batch_size: int, seed: int = 0) -> TrainingPlan:
    return TrainingPlan.resolve(get_protocol("quick"), batch_size, "fp32", None, steps, seed)


SCORES = ("iou", "dice", "s_measure", "mean_e_measure", "weighted_f_measure", "mae")


def test_fine_tune_then_evaluate_on_the_sample(trainee):
    train = open_dataset(SAMPLE_PATH, "train", image_size=trainee.image_size)
    test = open_dataset(SAMPLE_PATH, "test", image_size=trainee.image_size)
    before = {name: p.detach().clone() for name, p in trainee.method.named_parameters() if p.requires_grad}
    losses = fine_tune(trainee.method, train, quick(steps=3, batch_size=2)).losses
    assert len(losses) == 3 and all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert any(not torch.equal(p, before[n]) for n, p in trainee.method.named_parameters() if p.requires_grad)
    results = evaluate(trainee.method, test, batch_size=2)
    assert results["images"] == 2 and results["empty_masks"] == 0
    for key in SCORES:
        assert math.isfinite(results[key]) and 0.0 <= results[key] <= 1.0, (key, results[key])
    assert 0.0 <= results["ber"] <= 100.0
    assert trainee.method.training  # evaluate restores the mode it found


def test_predictions_are_cropped_to_content_and_resized_to_the_mask():
    low_res = torch.zeros(1, 1, 32, 32)
    low_res[..., :24, :] = 5.0  # content rows (96 of 128 input pixels); padding rows predict background
    logits = logits_at_original_size(low_res, 128, valid_size=(96, 128), original_size=(30, 40))
    assert logits.shape == (30, 40)
    assert (logits > 0).float().mean() > 0.9  # the padding does not leak into the original-size prediction


def test_image_size_mismatch_is_refused(trainee):
    wrong = SyntheticCamouflage("test", image_size=256, count=1)
    with pytest.raises(CadbenchError, match="prepared for 256 px but the backbone takes 128 px"):
        evaluate(trainee.method, wrong)


def test_evaluation_scores_at_the_protocols_resolution(monkeypatch):
    """cad-paper scores at the squashed half size, sam-adapter-paper at the encoder size, quick at each mask's own."""
    from cadbench.training import quality
    from cadbench.training.metrics import SegmentationMetrics

    shapes = []

    class Recording(SegmentationMetrics):
        def update(self, logits, mask):
            shapes.append(tuple(mask.shape))
            super().update(logits, mask)

    monkeypatch.setattr(quality, "SegmentationMetrics", Recording)
    method = prepare("decoder_only", "test_scale").method
    test = SyntheticCamouflage("test", image_size=128, count=2, height=30, width=44)
    for name, expected in (("cad-paper", (64, 64)), ("sam-adapter-paper", (128, 128)), ("quick", (30, 44))):
        shapes.clear()
        evaluate(method, test, batch_size=2, geometry=get_protocol(name).geometry)
        assert shapes == [expected, expected], name
