"""Gradient accumulation: the whole batch's gradient in micro-batches, at the memory of a micro-batch."""

import torch

from cadbench.estimator import estimate_cell
from cadbench.training.setup import make_training_setup
from cadbench.training.step import training_step
from cadbench.vocabulary.cell import Cell


def _first_step_gradients(cell: Cell) -> tuple[float, dict[str, torch.Tensor]]:
    setup = make_training_setup(cell, seed=5)
    optimizer = setup.trainee.optimizer
    optimizer.step = lambda: None  # the gradients of one step, unapplied
    loss = float(training_step(setup.trainee.method, optimizer, setup.batch, setup.plan))
    return loss, {name: p.grad.clone() for name, p in setup.trainee.method.named_parameters() if p.grad is not None}


def test_micro_batches_accumulate_the_whole_batchs_gradient_and_loss():
    whole_loss, whole = _first_step_gradients(Cell("decoder_only", "test_scale", 4))
    for micro_batch in (1, 2):
        loss, accumulated = _first_step_gradients(Cell("decoder_only", "test_scale", 4, micro_batch=micro_batch))
        assert abs(loss - whole_loss) < 1e-5
        assert accumulated.keys() == whole.keys() and whole
        for name, gradient in whole.items():
            torch.testing.assert_close(accumulated[name], gradient, rtol=1e-4, atol=1e-7, msg=name)


def test_one_optimizer_step_per_effective_batch():
    setup = make_training_setup(Cell("decoder_only", "test_scale", 4, micro_batch=1))
    calls = []
    step = setup.trainee.optimizer.step
    setup.trainee.optimizer.step = lambda *args, **kwargs: calls.append(1) or step(*args, **kwargs)
    setup.step()
    assert calls == [1]


def test_the_peak_is_a_micro_batchs_plus_the_rest_of_the_input_and_the_accumulated_gradients():
    one = estimate_cell(Cell("decoder_only", "test_scale", 1))
    plain = estimate_cell(Cell("decoder_only", "test_scale", 8))
    micro = estimate_cell(Cell("decoder_only", "test_scale", 8, micro_batch=1))
    # the batch (8 images of 3 x 128 x 128 float32, 8 masks of 128 x 128) stays whole on the device
    seven_more_images = 7 * (3 + 1) * 128 * 128 * 4
    # the gradients of the micro-batches before are alive while the next one runs (the one-image step has none
    # at its peak: zero_grad freed them)
    assert one.breakdown.gradients == 0 < micro.breakdown.gradients
    assert micro.peak_bytes <= one.peak_bytes + seven_more_images + micro.breakdown.gradients + 4096
    assert micro.peak_bytes - one.peak_bytes < 0.4 * (plain.peak_bytes - one.peak_bytes)
    assert abs(micro.flops_per_step / plain.flops_per_step - 1) < 0.01  # accumulation costs no FLOPs
