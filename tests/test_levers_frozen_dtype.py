"""Frozen weights stored in bf16: the parameters bar halves where the weights are frozen, nothing else changes."""

import torch

from cadbench.estimator import estimate_cell
from cadbench.estimator.cuda_runtime import allocator_bytes
from cadbench.training.setup import make_training_setup
from cadbench.training.step import training_step
from cadbench.vocabulary.cell import Cell


def test_frozen_weights_are_stored_in_bf16_and_trainable_ones_stay_fp32():
    method = make_training_setup(Cell("cad", "test_scale", 2, frozen_dtype="bf16")).trainee.method
    stored = {name: p for name, p in method.named_parameters()}
    frozen = [name for name, p in stored.items() if not p.requires_grad]
    assert frozen and all(stored[name].dtype == torch.bfloat16 for name in frozen)
    assert all(p.dtype == torch.float32 for p in method.trainable_parameters())
    # read through the parametrization, a frozen weight is float32 again, holding the rounded values
    weight = method.sam.image_encoder.blocks[0].attn.qkv.weight
    assert weight.dtype == torch.float32


def test_the_parameters_bar_holds_frozen_weights_at_half_size():
    cell = Cell("decoder_only", "test_scale", 2)
    plain, half = estimate_cell(cell), estimate_cell(Cell("decoder_only", "test_scale", 2, frozen_dtype="bf16"))
    method = make_training_setup(cell).trainee.method
    frozen = sum(allocator_bytes(p.numel() * 2) for p in method.parameters() if not p.requires_grad)
    trainable = sum(allocator_bytes(p.numel() * 4) for p in method.parameters() if p.requires_grad)
    assert half.breakdown.parameters == frozen + trainable
    assert (half.breakdown.gradients, half.breakdown.optimizer_states) == \
        (plain.breakdown.gradients, plain.breakdown.optimizer_states)


def test_on_a_full_size_model_the_parameters_bar_halves():
    plain = estimate_cell(Cell("decoder_only", "vit_b", 1))
    half = estimate_cell(Cell("decoder_only", "vit_b", 1, frozen_dtype="bf16"))
    assert 0.5 < half.breakdown.parameters / plain.breakdown.parameters < 0.53  # the decoder (4M) stays fp32


def test_a_step_with_bf16_frozen_weights_trains_like_the_plain_step():
    losses = []
    for frozen_dtype in ("fp32", "bf16"):
        setup = make_training_setup(Cell("sam_adapter", "test_scale", 2, frozen_dtype=frozen_dtype), seed=1)
        losses.append([float(training_step(setup.trainee.method, setup.optimizer, setup.batch, setup.plan))
                       for _ in range(3)])
    plain, half = losses
    assert half[-1] < half[0]
    assert all(abs(a - b) < 2e-2 * abs(a) for a, b in zip(plain, half))  # the weights rounded to bf16, only
