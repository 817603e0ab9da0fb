"""pytest-benchmark benchmarks of the hot paths. Not part of the pass/fail suite; run with

    pytest benchmarks --benchmark-only

Timings are of this machine's CPU.
"""

import numpy as np
import pytest
import torch

from cadbench.methods.frequency import high_pass
from cadbench.training.metrics import SegmentationMetrics


@pytest.fixture(scope="module")
def masks_1024():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:1024, :1024]
    mask = (yy - 500) ** 2 + (xx - 480) ** 2 < 300**2
    logits = torch.from_numpy(rng.normal(0, 1, (1024, 1024)).astype(np.float32)) + torch.from_numpy(mask * 2.0 - 1.0)
    return logits.float(), mask


def test_metrics_on_a_1024_mask(benchmark, masks_1024):
    logits, mask = masks_1024

    def score():
        metrics = SegmentationMetrics()
        metrics.update(logits, mask)
        return metrics.results()

    results = benchmark(score)
    assert 0 < results["iou"] < 1


def test_fft_high_pass_of_a_1024_image(benchmark):
    images = torch.rand(1, 3, 1024, 1024) * 255
    out = benchmark(high_pass, images)
    assert out.shape == images.shape


@pytest.mark.parametrize("method", ["sam_adapter", "cad"])
def test_estimator_vit_h_cell(benchmark, method):
    from cadbench.estimator import clear_cache, estimate_cell
    from cadbench.vocabulary.cell import Cell

    def fresh_estimate():
        clear_cache()
        return estimate_cell(Cell(method, "vit_h", 4))

    estimate = benchmark.pedantic(fresh_estimate, rounds=2, iterations=1)
    assert estimate.peak_bytes > 0
