"""lora is SAMed's LoRA: q and v branches on Meta's fused qkv in every block, added in place, B = 0 at the start."""

import math

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from cadbench.backbones import build_sam
from cadbench.errors import CadbenchError
from cadbench.methods import Lora
from cadbench.methods.lora import LoraOptions, LoraQkv
from cadbench.params import count_parameters
from cadbench.registry import build_method
from cadbench.datasets.batch import random_batch

EMBED_DIM = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}
DEPTH = {"vit_b": 12, "vit_l": 24, "vit_h": 32}
MASK_DECODER = 4_058_340


def lora_params(backbone: str, rank: int = 4) -> int:
    """Per block: A (rank x dim) and B (dim x rank), for q and for v, no biases."""
    return DEPTH[backbone] * 2 * (rank * EMBED_DIM[backbone] + EMBED_DIM[backbone] * rank)


def test_with_b_zero_the_encoder_output_is_meta_encoder_output_bit_for_bit():
    sam = build_sam("test_scale").sam
    images = random_batch(128, 2).images
    with torch.no_grad():
        expected = sam.image_encoder(sam.preprocess(images))
        method = Lora(sam)
        assert all(torch.count_nonzero(block.attn.qkv.linear_b_q.weight) == 0 for block in sam.image_encoder.blocks)
        torch.testing.assert_close(method.image_embeddings(images), expected, rtol=0, atol=0)


def test_every_block_wraps_meta_qkv_with_q_and_v_branches_of_rank_r_on_the_meta_device():
    sam = build_sam("vit_h", device="meta").sam
    originals = [block.attn.qkv for block in sam.image_encoder.blocks]
    with torch.device("meta"):
        Lora(sam, LoraOptions(rank=8))
    for block, original in zip(sam.image_encoder.blocks, originals):
        assert isinstance(block.attn, Attention)  # Meta's attention, unchanged; only its qkv Linear is wrapped
        wrapped = block.attn.qkv
        assert isinstance(wrapped, LoraQkv) and wrapped.qkv is original and not original.weight.requires_grad
        for a, b in ((wrapped.linear_a_q, wrapped.linear_b_q), (wrapped.linear_a_v, wrapped.linear_b_v)):
            assert a.weight.shape == (8, 1280) and b.weight.shape == (1280, 8)
            assert a.bias is None and b.bias is None
    assert len(sam.image_encoder.blocks) == 32


def test_a_is_kaiming_uniform_with_a_sqrt5_and_b_is_zero():
    torch.manual_seed(0)
    wrapped = LoraQkv(torch.nn.Linear(256, 768), rank=64)
    bound = math.sqrt(6 / ((1 + 5) * 256))  # kaiming_uniform_(a=sqrt(5)) on fan_in 256 = 1/sqrt(256)
    for a in (wrapped.linear_a_q.weight, wrapped.linear_a_v.weight):
        assert a.abs().max() <= bound and a.abs().max() > 0.9 * bound
        assert abs(a.std().item() - bound / math.sqrt(3)) < 0.05 * bound  # uniform(-b, b) has std b/sqrt(3)
    assert torch.count_nonzero(wrapped.linear_b_q.weight) == torch.count_nonzero(wrapped.linear_b_v.weight) == 0


def test_the_branches_touch_q_and_v_but_never_k():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 48)
    wrapped = LoraQkv(base, rank=2)
    torch.nn.init.normal_(wrapped.linear_b_q.weight)
    torch.nn.init.normal_(wrapped.linear_b_v.weight)
    x = torch.randn(2, 5, 5, 16)
    with torch.no_grad():
        plain, adapted = base(x), wrapped(x)
    q, k, v = (adapted - plain).split(16, dim=-1)
    assert q.abs().min() > 0 and v.abs().min() > 0
    assert torch.count_nonzero(k) == 0
    with torch.no_grad():
        torch.testing.assert_close(q, wrapped.linear_b_q(wrapped.linear_a_q(x)))
        torch.testing.assert_close(v, wrapped.linear_b_v(wrapped.linear_a_v(x)))


def test_the_terms_are_added_in_place_into_the_qkv_output_as_in_the_reference():
    wrapped = LoraQkv(torch.nn.Linear(16, 48), rank=2)
    produced = {}
    wrapped.qkv.register_forward_hook(lambda _module, _inputs, output: produced.setdefault("qkv", output))
    returned = wrapped(torch.randn(2, 4, 4, 16, requires_grad=True))
    assert returned is produced["qkv"]  # no new tensor: the Linear's own output, modified in place
    # `qkv[..., :dim] += term`, as the reference writes it: an in-place add into the slice, then Python's item
    # assignment copies the slice onto itself (also in place): two version bumps each for q and v, no new storage.
    assert returned._version == 4


def test_trainable_parameters_are_the_branches_and_the_mask_decoder_only():
    method = build_method("lora:rank=2", build_sam("test_scale").sam)
    trainable = {name for name, parameter in method.named_parameters() if parameter.requires_grad}
    branches = {name for name in trainable if ".attn.qkv.linear_" in name}
    assert len(branches) == 4 * len(method.sam.image_encoder.blocks)
    decoder = {name for name, _ in method.named_parameters() if name.startswith("sam.mask_decoder.")}
    assert trainable - branches == decoder
    assert not any(parameter.requires_grad for parameter in method.sam.prompt_encoder.parameters())  # SAMed trains it


@pytest.mark.parametrize("backbone", ["vit_b", "vit_l", "vit_h"])
@pytest.mark.parametrize("rank", [4, 16])
def test_parameter_counts_follow_the_structure_exactly(backbone, rank):
    counts = count_parameters(f"lora:rank={rank}", backbone)
    assert counts.trainable_params == MASK_DECODER + lora_params(backbone, rank)
    assert counts.method_options == ("" if rank == 4 else f"rank={rank}")


def test_rank_must_be_a_positive_integer():
    with pytest.raises(CadbenchError, match="method lora: option rank=0: must be a positive integer"):
        build_method("lora:rank=0", build_sam("test_scale", device="meta").sam)
