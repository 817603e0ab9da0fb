"""fp16: autocast in float16 with loss scaling (GradScaler), estimated with CUDA's fp16 autocast policy."""

import math

import torch

from cadbench.estimator import estimate_cell
from cadbench.training.loss_scaling import LossScaler, loss_scaler
from cadbench.training.setup import make_training_setup
from cadbench.vocabulary.cell import Cell


def test_an_fp16_step_scales_the_loss_keeps_one_scaler_per_optimizer_and_trains():
    setup = make_training_setup(Cell("sam_adapter", "test_scale", 2, "fp16"), seed=2)
    before = {name: p.detach().clone() for name, p in setup.trainee.method.named_parameters() if p.requires_grad}
    losses = [float(setup.step()) for _ in range(3)]
    scaler = loss_scaler(setup.optimizer, setup.batch.images.device)
    assert isinstance(scaler, LossScaler) and scaler.get_scale() == 2.0**16  # no overflow: the scale stays
    assert all(math.isfinite(loss) for loss in losses)
    changed = [name for name, p in setup.trainee.method.named_parameters()
               if p.requires_grad and not torch.equal(p, before[name])]
    assert changed
    assert all(p.dtype == torch.float32 for p in setup.trainee.method.parameters())  # autocast, not a cast model


def test_fp16_allocates_as_bf16_plus_the_loss_scalers_own_tensors():
    """Both half types are 2 bytes under the same autocast policy; fp16 adds the scaler's scale, growth tracker and
    per-step flags (each a 512-byte block on CUDA)."""
    fp32, bf16, fp16 = (estimate_cell(Cell("sam_adapter", "test_scale", 2, precision))
                        for precision in ("fp32", "bf16", "fp16"))
    assert fp16.breakdown.activations != fp32.breakdown.activations
    assert abs(fp16.breakdown.activations - bf16.breakdown.activations) <= 512
    assert 0 < fp16.breakdown.temporaries - bf16.breakdown.temporaries <= 4 * 512
    assert fp16.breakdown.parameters == fp32.breakdown.parameters  # autocast casts per op; weights stay float32
