"""Activation checkpointing of the encoder: same gradients, the encoder's saved activations gone, more FLOPs."""

import torch

from cadbench.estimator import estimate_cell
from cadbench.training.levers import CheckpointedBlock
from cadbench.training.setup import make_training_setup
from cadbench.training.step import training_step
from cadbench.vocabulary.cell import Cell


def _gradients(cell: Cell) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    setup = make_training_setup(cell, seed=3)
    method = setup.trainee.method
    original_step = setup.trainee.optimizer.step
    setup.trainee.optimizer.step = lambda: None  # keep the gradients of the first step, unapplied
    try:
        loss = training_step(method, setup.trainee.optimizer, setup.batch, setup.plan)
    finally:
        setup.trainee.optimizer.step = original_step
    names = {id(p): name.replace(".block.", ".") for name, p in method.named_parameters()}
    return loss, {names[id(p)]: p.grad for p in method.trainable_parameters() if p.grad is not None}


def test_every_encoder_block_is_wrapped_and_the_gradients_are_the_plain_steps():
    cell = Cell("sam_adapter", "test_scale", 2, checkpointing="encoder")
    blocks = make_training_setup(cell).trainee.method.sam.image_encoder.blocks
    assert len(blocks) == 4 and all(isinstance(block, CheckpointedBlock) for block in blocks)
    plain_loss, plain = _gradients(cell.plain)
    loss, checkpointed = _gradients(cell)
    torch.testing.assert_close(loss, plain_loss)
    assert checkpointed.keys() == plain.keys() and len(plain) > 10
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_checkpointing_removes_the_encoders_saved_activations_and_costs_one_more_encoder_forward():
    plain = estimate_cell(Cell("sam_adapter", "test_scale", 2))
    checkpointed = estimate_cell(Cell("sam_adapter", "test_scale", 2, checkpointing="encoder"))
    assert any(".image_encoder.blocks." in name for name, _ in plain.top_activation_modules)
    assert not any(".image_encoder.blocks." in name for name, _ in checkpointed.top_activation_modules)
    assert checkpointed.breakdown.activations < plain.breakdown.activations / 2
    assert checkpointed.breakdown.parameters == plain.breakdown.parameters
    # the encoder's forward runs twice: more FLOPs, but less than two whole forwards and backwards
    assert 1.1 < checkpointed.flops_per_step / plain.flops_per_step < 1.5


def test_the_recomputed_attention_is_fused_so_sam_adapter_vit_h_fits_24_gb_at_batch_4():
    """Issue 11's target: the recomputed global attention no longer materialises scores, biased scores and softmax
    (16.6 GB of temporaries at vit_h batch 4, estimated, before the attention was fused)."""
    from cadbench.training.levers.fused_attention import FusedAttention

    cell = Cell("sam_adapter", "test_scale", 2, checkpointing="encoder")
    encoder = make_training_setup(cell).trainee.method.sam.image_encoder
    assert all(isinstance(block.block.attn, FusedAttention) for block in encoder.blocks)
    full_size = Cell("sam_adapter", "vit_h", 4, checkpointing="encoder")
    assert estimate_cell(full_size).oom_capacity_bytes() <= 24 * 10**9
    assert estimate_cell(full_size.plain).oom_capacity_bytes() > 24 * 10**9
