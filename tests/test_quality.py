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


def test_object_evaluation_scores_every_object_and_averages_over_objects():
    """--prompts-per-image N: each object of a test image is prompted by its box and scored against its own mask;
    IoU and Dice are means over objects (micro-sam's), equal to scoring each object alone."""
    import numpy as np

    from cadbench.datasets.dataset import ALL_OBJECTS, PreparedDataset
    from cadbench.training.metrics import overlap_scores

    torch.manual_seed(0)
    trainee = prepare("decoder_only", "test_scale")
    method = trainee.method.eval()
    test = SyntheticCamouflage("test", image_size=128, count=6, objects=True)
    results = evaluate(method, test, objects=True)
    counts = test.object_counts()
    assert results["objects"] == results["images"] == int(counts.sum()) and (counts == 0).any()
    ious, dices = [], []
    with torch.no_grad():
        for sample in (PreparedDataset(test, objects=ALL_OBJECTS)[i] for i in range(len(test))):
            for k in range(sample.objects.count):  # each object decoded alone, with its one box
                low = method(sample.image[None], sample.objects.boxes[k][None])
                logits = logits_at_original_size(low, 128, sample.valid_size, sample.original_mask.shape)
                iou, dice = overlap_scores((logits > 0).numpy(), sample.objects.original[k])
                ious.append(iou)
                dices.append(dice)
    assert results["iou"] == pytest.approx(float(np.mean(ious)), abs=1e-6)
    assert results["dice"] == pytest.approx(float(np.mean(dices)), abs=1e-6)


def test_a_test_split_without_any_object_is_a_one_line_error_not_a_crash():
    test = SyntheticCamouflage("test", image_size=128, count=40, objects=True)
    empty = [i for i, count in enumerate(test.object_counts()) if count == 0]
    from cadbench.datasets import SubsetDataset

    nothing = SubsetDataset(test, empty, "test", "the empty scenes")
    with pytest.raises(CadbenchError, match="has an object to score"):
        evaluate(prepare("decoder_only", "test_scale").method, nothing, objects=True)
