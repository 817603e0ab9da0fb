"""The adapters have the shapes, hyper-parameters and wiring of the reference implementations."""

import torch

from cadbench.backbones import build_sam
from cadbench.methods import CAD, SamAdapter
from cadbench.methods.frequency import high_pass
from cadbench.datasets.batch import random_batch


def test_high_pass_removes_the_centred_quarter_of_the_spectrum():
    constant = torch.full((1, 3, 64, 64), 7.0)
    assert high_pass(constant).abs().max() < 1e-4  # only DC: removed
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 2.0 - 1.0  # Nyquist frequency: kept
    torch.testing.assert_close(high_pass(checker.expand(1, 1, 64, 64)), checker.abs().expand(1, 1, 64, 64))
    # A frequency just inside the removed square vanishes, one just outside survives (half-side 16 at 64 px).
    x = torch.arange(64.0)
    inside = torch.cos(2 * torch.pi * 15 * x / 64).expand(1, 1, 64, 64)
    outside = torch.cos(2 * torch.pi * 17 * x / 64).expand(1, 1, 64, 64)
    assert high_pass(inside).abs().max() < 1e-4
    torch.testing.assert_close(high_pass(outside), outside.abs(), rtol=1e-4, atol=1e-4)


def test_sam_adapter_with_zero_prompts_is_exactly_meta_encoder():
    sam = build_sam("test_scale").sam
    method = SamAdapter(sam)
    torch.nn.init.zeros_(method.prompt_generator.shared_up.weight)
    images = random_batch(128, 2).images
    with torch.no_grad():
        torch.testing.assert_close(method.image_embeddings(images), sam.image_encoder(sam.preprocess(images)),
                                   rtol=0, atol=0)


def test_sam_adapter_full_size_shapes_on_meta_device():
    sam = build_sam("vit_h", device="meta").sam
    with torch.device("meta"):
        generator = SamAdapter(sam).prompt_generator
        rank = 1280 // 32
        assert generator.handcrafted_embed.weight.shape == (rank, 3, 16, 16)
        assert generator.handcrafted_embed.stride == (16, 16)
        assert generator.embedding_tune.weight.shape == (rank, 1280)
        assert len(generator.lightweight_mlps) == 32
        assert generator.lightweight_mlps[0][0].weight.shape == (rank, rank)
        assert isinstance(generator.lightweight_mlps[0][1], torch.nn.GELU)
        assert generator.shared_up.weight.shape == (1280, rank)
        prompts = generator(torch.empty(2, 3, 1024, 1024), torch.empty(2, 64, 64, 1280))
    assert len(prompts) == 32 and prompts[0].shape == (2, 64, 64, 1280)


def test_cad_adapter_full_size_structure_on_meta_device():
    sam = build_sam("vit_b", device="meta").sam
    with torch.device("meta"):
        method = CAD(sam)
        adapter = method.adapter
        assert adapter.lift.weight.shape == (256, 6, 1, 1)
        assert len(adapter.blocks) == 3
        for block in adapter.blocks:
            assert block.conv.weight.shape == (256, 256, 3, 3) and block.conv.dilation == (2, 2)
            assert block.conv.padding == "same" and isinstance(block.norm, torch.nn.BatchNorm2d)
            assert block.activation.negative_slope == 0.1
        adapter_input = method.adapter_input(torch.empty(2, 3, 1024, 1024))
        assert adapter_input.shape == (2, 6, 512, 512)
        sizes = []
        x = adapter.lift(adapter_input)
        for block in adapter.blocks:
            x = block(x)
            sizes.append(x.shape[-1])
        assert sizes == [256, 128, 64]
        assert adapter(adapter_input).shape == (2, 256, 64, 64)


def test_cad_adds_a_tenth_of_a_tanh_bounded_adapter_output():
    sam = build_sam("test_scale").sam
    method = CAD(sam)
    images = random_batch(128, 2).images
    with torch.no_grad():
        plain = sam.image_encoder(sam.preprocess(images))
        difference = method.image_embeddings(images) - plain
    assert difference.abs().max() <= 0.1 + 1e-6
    assert difference.abs().max() > 0


def test_cad_input_channels_are_each_scaled_to_their_maximum():
    sam = build_sam("test_scale").sam
    method = CAD(sam)
    images = random_batch(128, 2).images
    seen = {}
    method.adapter.lift.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("x", inputs[0]))
    with torch.no_grad():
        method.adapter(method.adapter_input(images))
    maxima = seen["x"].amax(dim=(2, 3))
    torch.testing.assert_close(maxima, torch.ones_like(maxima), rtol=1e-4, atol=1e-4)
