"""The estimator on full-size backbones: the published memory claims, and its shortcuts proven on vit_b.

All on fake tensors (nothing full-size is allocated). Figures in GB are decimal (10^9 bytes) unless marked GiB.
"""

import pytest

from cadbench.estimator import MemoryEstimate, estimate_cell, estimate_setup
from cadbench.estimator.cuda_runtime import allocator_bytes
from cadbench.training.setup import make_training_setup, prepare
from cadbench.vocabulary.cell import Cell

BACKBONES = ("vit_b", "vit_l", "vit_h")
GB = 10**9
NO_GRADIENT_PREFIX = "sam.mask_decoder.iou_prediction_head."  # unused by the shared loss: no gradient, no state


def assert_same_estimate(reused: MemoryEstimate, fresh: MemoryEstimate) -> None:
    """As in test_estimator: equal but for the order in which zero_grad frees the previous step's gradients."""
    assert (reused.peak_bytes, reused.breakdown, reused.flops_per_step, reused.top_activation_modules) == \
        (fresh.peak_bytes, fresh.breakdown, fresh.flops_per_step, fresh.top_activation_modules)
    assert (reused.reserved_bytes, reused.allocator_budget_bytes) == \
        (fresh.reserved_bytes, fresh.allocator_budget_bytes)
    assert max(live for _, live in reused.timeline) == max(live for _, live in fresh.timeline)


def peak(method: str, backbone: str, precision: str = "fp32") -> int:
    return estimate_cell(Cell(method, backbone, 4, precision)).peak_bytes


def test_sam_adapter_on_vit_h_at_batch_4_needs_more_than_40_gb():
    assert peak("sam_adapter", "vit_h") > 40 * GB
    assert peak("sam_adapter", "vit_h") > 40 * 2**30  # in GiB too (about 62.7 GiB)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_cad_below_sam_adapter_and_above_decoder_only(backbone):
    assert peak("decoder_only", backbone) <= peak("cad", backbone) < peak("sam_adapter", backbone)


@pytest.mark.parametrize("backbone", ["vit_l", "vit_h"])
def test_cad_needs_less_than_half_of_sam_adapter(backbone):
    assert peak("cad", backbone) < 0.5 * peak("sam_adapter", backbone)


def test_on_vit_b_cad_is_above_half_of_sam_adapter():
    """Not the paper's claim, and not a bug: CAD's peak is the frozen encoder's forward under no_grad, whose
    global-attention scores (B x 12 heads x 4096^2 floats, three alive at once in Meta's add_decomposed_rel_pos)
    cost the same for every method; on vit_b SAM Adapter's stored activations are not yet large enough to double
    it. (0.58 at batch size 4.)"""
    assert 0.5 < peak("cad", "vit_b") / peak("sam_adapter", "vit_b") < 0.65
    decoder_only = estimate_cell(Cell("decoder_only", "vit_b", 4))
    assert decoder_only.breakdown.gradients == 0  # the peak is before any gradient exists: in the forward pass


@pytest.mark.parametrize("method", ["decoder_only", "sam_adapter", "cad"])
def test_parameters_and_optimizer_states_match_the_model(method):
    estimate = estimate_cell(Cell(method, "vit_h", 4))
    model = prepare(method, "vit_h", device="meta").method
    assert estimate.breakdown.parameters == sum(allocator_bytes(4 * p.numel()) for p in model.parameters())
    stepped = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith(NO_GRADIENT_PREFIX)]
    assert estimate.breakdown.optimizer_states == 2 * sum(allocator_bytes(4 * p.numel()) for p in stepped)
    assert estimate.breakdown.total == estimate.peak_bytes


def test_bf16_needs_less_than_fp32_for_sam_adapter_on_vit_h():
    assert peak("sam_adapter", "vit_h", "bf16") < peak("sam_adapter", "vit_h")


@pytest.mark.parametrize("method", ["decoder_only", "sam_adapter", "cad"])
def test_shortcuts_equal_the_plain_replay_on_vit_b(method):
    """estimate_cell (op cache, one warm replay for all batch sizes) against a plain FakeTensorMode replay of two
    steps at that batch size, built from scratch."""
    for batch_size in (1, 2):
        plain = estimate_setup(lambda: make_training_setup(Cell(method, "vit_b", batch_size)), cache_ops=False)
        assert_same_estimate(estimate_cell(Cell(method, "vit_b", batch_size)), plain)

