"""The SAM 2.1 backbones: built by Meta's `build_sam2` from its own configs (parameter counts equal Meta's models),
run in image mode exactly as Meta's `SAM2ImagePredictor` runs them, loading Meta's checkpoint format, and their
refusals. Skipped only where the `sam2` extra is not installed, except the refusal without it, which runs everywhere."""

import hashlib
import importlib.util

import numpy as np
import pytest
import torch
from cadbench_in_process import cadbench_main
from sam_checkpoint import estimate_from_a_sam_checkpoint

from cadbench.backbones import (build_sam, default_backbones, get_backbone, left_out_notes, require_backbone,
                                unavailable_backbones)
from cadbench.errors import CadbenchError
from cadbench.families import SAM2, family_of
from cadbench.families import sam2 as sam2_family
from cadbench.methods.decoding import decode_masks

needs_extra = pytest.mark.skipif(sam2_family.missing_requirement() is not None,
                                 reason=f"the sam2 extra is not installed: {sam2_family.EXTRA}")
SAM2_BACKBONES = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@needs_extra
@pytest.mark.parametrize("backbone, total, encoder", [
    # Meta's published sizes: 38.9 M, 46 M, 80.8 M, 224.4 M (README of facebookresearch/sam2, SAM 2.1 checkpoints)
    ("sam2.1_hiera_t", 38_962_498, 27_219_136),
    ("sam2.1_hiera_s", 46_060_354, 34_316_992),
    ("sam2.1_hiera_b+", 80_850_178, 69_106_816),
    ("sam2.1_hiera_l", 224_446_642, 212_703_280),
])
def test_parameter_counts_are_metas_sam2_base_counted_on_the_meta_device(backbone, total, encoder):
    built = build_sam(backbone, device="meta")
    sam = built.sam
    assert type(sam).__mro__[2].__name__ == "SAM2Base" and type(sam).__mro__[2].__module__ == "sam2.modeling.sam2_base"
    assert family_of(sam).name == SAM2 and built.weights == "random" and built.image_size == 1024
    assert {parameter.device.type for parameter in sam.parameters()} == {"meta"}
    assert _count(sam) == total
    assert _count(sam.image_encoder) == encoder  # Hiera + FPN neck
    assert _count(sam.mask_decoder) == 4_215_109 and _count(sam.prompt_encoder) == 6_220
    assert sam.mask_decoder is sam.sam_mask_decoder and sam.prompt_encoder is sam.sam_prompt_encoder
    # the model Meta's builder returns for the config, nothing added or dropped: state dict keys are a checkpoint's
    assert all(not key.startswith(("prompt_encoder.", "mask_decoder.")) for key in sam.state_dict())


@needs_extra
def test_the_test_scale_sam2_is_built_by_metas_builder_from_its_classes():
    sam = build_sam("sam2_test_scale").sam
    assert get_backbone("sam2_test_scale").test_scale and get_backbone("sam2_test_scale").label.endswith("(test scale)")
    assert _count(sam) == 649_386
    assert type(sam.image_encoder.trunk).__module__ == "sam2.modeling.backbones.hieradet"
    assert [len(blocks) for blocks in family_of(sam).encoder_blocks(sam.image_encoder)] == [5]
    with torch.no_grad():
        features = sam.image_encoder(sam.preprocess(torch.rand(2, 3, 128, 128) * 255))
    assert [tuple(level.shape) for level in features] == [(2, 32, 32, 32), (2, 32, 16, 16), (2, 32, 8, 8)]


def _metas_own(sam: torch.nn.Module) -> torch.nn.Module:
    """The same weights in the model exactly as Meta's builder returns it (no cadbench class)."""
    from sam2.build_sam import build_sam2

    plain = build_sam2(sam2_family.CONFIGS["sam2.1_hiera_t"], device="cpu",
                       hydra_overrides_extra=list(sam2_family.TEST_SCALE_OVERRIDES))
    plain.load_state_dict(sam.state_dict(), strict=True)
    return plain.eval()


@needs_extra
@pytest.mark.parametrize("boxes_per_image", [1, 3])
def test_decoding_gives_the_logits_of_metas_image_predictor(boxes_per_image):
    """SAM2ImagePredictor.set_image_batch + predict_batch (return_logits, one mask per box) on the same weights, images
    and boxes: the same low-resolution logits, for one box per image and for several (repeat_image)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    torch.manual_seed(0)
    sam = build_sam("sam2_test_scale").sam.eval()
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8)
    boxes = torch.tensor([[[10.0, 12.0, 100.0, 90.0], [0.0, 0.0, 128.0, 128.0], [40.0, 30.0, 70.0, 120.0]],
                          [[5.0, 60.0, 60.0, 127.0], [20.0, 20.0, 90.0, 90.0], [0.0, 0.0, 64.0, 64.0]]])
    boxes = boxes[:, 0] if boxes_per_image == 1 else boxes
    with torch.no_grad():
        ours = decode_masks(sam, sam.image_encoder(sam.preprocess(images.float())), boxes)
    predictor = SAM2ImagePredictor(_metas_own(sam))
    predictor._bb_feat_sizes = [(32, 32), (16, 16), (8, 8)]  # Meta hard-codes 1024 px's; the test scale is 128 px
    predictor.set_image_batch([image.permute(1, 2, 0).numpy() for image in images])
    _, _, low_res = predictor.predict_batch(box_batch=[b.numpy() for b in boxes], multimask_output=False,
                                            return_logits=True)
    expected = torch.stack([torch.as_tensor(np.asarray(logits)).reshape(-1, 32, 32) for logits in low_res])
    assert ours.shape == ((2, 1, 32, 32) if boxes_per_image == 1 else (2, 3, 32, 32))
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()


@needs_extra
def test_preprocessing_is_sam2_transforms():
    from sam2.utils.transforms import SAM2Transforms

    sam = build_sam("sam2_test_scale").sam
    image = torch.randint(0, 256, (128, 128, 3), dtype=torch.uint8)
    expected = SAM2Transforms(resolution=128, mask_threshold=0.0)(image.numpy())
    ours = sam.preprocess(image.permute(2, 0, 1)[None].float())[0]
    assert torch.allclose(ours, expected, atol=1e-6)


@needs_extra
def test_a_checkpoint_in_metas_format_loads_weights_only_with_its_sha256_and_metas_builder_reads_it(tmp_path):
    from sam2.build_sam import build_sam2

    trained = build_sam("sam2_test_scale").sam
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.5)
    path = tmp_path / "sam2_test_scale.pt"
    torch.save({"model": trained.state_dict()}, path)  # as Meta's sam2.1_hiera_*.pt are written
    built = build_sam("sam2_test_scale", checkpoint=path)
    assert built.weights == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    for (name, ours), (_, theirs) in zip(built.sam.state_dict().items(), trained.state_dict().items()):
        assert torch.equal(ours, theirs), name
    with_more = tmp_path / "with_more.pt"  # build_sam2 reads ["model"] whatever else the file holds
    torch.save({"model": trained.state_dict(), "epoch": 3}, with_more)
    assert build_sam("sam2_test_scale", checkpoint=with_more).weights.startswith("sha256:")
    metas = build_sam2(sam2_family.CONFIGS["sam2.1_hiera_t"], ckpt_path=str(path), device="cpu",
                       hydra_overrides_extra=list(sam2_family.TEST_SCALE_OVERRIDES))
    assert all(torch.equal(a, b) for a, b in zip(metas.state_dict().values(), built.sam.state_dict().values()))


@needs_extra
def test_a_sam_checkpoint_for_sam2_and_the_reverse_are_refused_in_one_line_naming_both(tmp_path):
    sam_file, result = estimate_from_a_sam_checkpoint("sam2.1_hiera_t", tmp_path)
    assert result.returncode == 2 and not (tmp_path / "estimate").exists()
    assert result.stderr.strip().splitlines() == [
        f"cadbench: error: checkpoint {sam_file} is a SAM (ViT image encoder) checkpoint, not one of backbone "
        f"sam2.1_hiera_t (SAM 2.1 (Hiera image encoder))"]
    sam2_file = tmp_path / "sam2_test_scale.pt"
    torch.save({"model": build_sam("sam2_test_scale").sam.state_dict()}, sam2_file)
    with pytest.raises(CadbenchError, match=f"^checkpoint {sam2_file} is a SAM 2.1 \\(Hiera image encoder\\) "
                                            "checkpoint, not one of backbone vit_b \\(SAM \\(ViT image encoder\\)\\)$"):
        build_sam("vit_b", checkpoint=sam2_file)
    with pytest.raises(CadbenchError, match=f"checkpoint {sam2_file} does not match backbone sam2.1_hiera_t: "):
        build_sam("sam2.1_hiera_t", checkpoint=sam2_file)  # the right family, the wrong size


@needs_extra
def test_with_the_extra_the_default_grid_takes_the_four_sam2_backbones_after_sams():
    assert default_backbones() == ["vit_b", "vit_l", "vit_h", *SAM2_BACKBONES]
    assert not any(note.startswith("backbones sam2") for note in left_out_notes())


@needs_extra
def test_another_image_size_gives_the_model_metas_builder_makes_at_that_size():
    """SAM 2 resized after it is built (no weight depends on the size) equals Meta's `build_sam2` with
    `++model.image_size=S` on the same weights: same attributes, same logits."""
    from cadbench.datasets.batch import random_batch
    from cadbench.methods import DecoderOnly

    torch.manual_seed(0)
    resized = build_sam("sam2_test_scale", image_size=256).sam.eval()
    overrides = [item for item in sam2_family.TEST_SCALE_OVERRIDES if "image_size" not in item]
    metas = sam2_family.build_image_model(sam2_family.CONFIGS["sam2.1_hiera_t"],
                                          [*overrides, "++model.image_size=256"]).eval()
    metas.load_state_dict(resized.state_dict())
    assert (resized.image_size, resized.sam_image_embedding_size) == (metas.image_size, metas.sam_image_embedding_size)
    for name in ("image_embedding_size", "input_image_size", "mask_input_size"):
        assert getattr(resized.sam_prompt_encoder, name) == getattr(metas.sam_prompt_encoder, name), name
    images, boxes = random_batch(256, 2).images, torch.tensor([[10.0, 20, 200, 180], [0, 0, 255, 255]])
    with torch.no_grad():
        ours, theirs = DecoderOnly(resized).eval()(images, boxes), DecoderOnly(metas).eval()(images, boxes)
    assert ours.shape == (2, 1, 64, 64) and torch.equal(ours, theirs)
    with torch.device("meta"):  # the parameters do not change with the size
        assert sum(p.numel() for p in build_sam("sam2.1_hiera_t", image_size=512).sam.parameters()) == 38_962_498


@needs_extra
def test_an_image_size_hiera_cannot_take_is_refused_in_one_line_naming_the_rule():
    from cadbench.harness.grid import make_cell

    assert make_cell("decoder_only", "sam2.1_hiera_t", 1, image_size=512).image_size == 512
    with pytest.raises(CadbenchError, match=r"^--image-size 528: backbone sam2.1_hiera_t takes multiples of 32 px "
                                            r"only \(Hiera's first window must tile"):
        make_cell("decoder_only", "sam2.1_hiera_t", 1, image_size=528)


def test_sam2_without_its_extra_is_refused_in_one_line_with_the_install_command(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == sam2_family.PACKAGE else find_spec(name, *args))
    line = ("backbone sam2.1_hiera_b+ needs Meta's SAM 2 package: SAM2_BUILD_CUDA=0 pip install --no-build-isolation "
            "\"cadbench[sam2]\" (after torch)")
    with pytest.raises(CadbenchError) as error:
        require_backbone("sam2.1_hiera_b+")
    assert str(error.value) == line
    assert set(unavailable_backbones()) >= {*SAM2_BACKBONES, "sam2_test_scale"}
    # the default grid leaves them out, in one note for the four (the test scale is never in it)
    assert default_backbones() == ["vit_b", "vit_l", "vit_h"]
    assert (f"backbones {', '.join(SAM2_BACKBONES)} are not in the grid: they need "
            f"{line.removeprefix('backbone sam2.1_hiera_b+ needs ')}") in left_out_notes()
    for args in (("estimate", "--backbone", "sam2.1_hiera_b+", "--methods", "decoder_only", "--out", tmp_path / "o"),
                 ("list", "--backbone", "sam2.1_hiera_b+")):
        result = cadbench_main(*args)
        assert result.returncode == 2, args
        assert result.stderr.strip().splitlines() == [f"cadbench: error: {line}"], result.stderr
