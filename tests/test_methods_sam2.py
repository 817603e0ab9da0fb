"""Methods on SAM 2.1: decoder_only, full, lora, peft, cad and sam_adapter (SAM2-Adapter) take real steps on the
test-scale SAM 2 changing exactly what they train, activation checkpointing wraps every Hiera block without changing
the update, a method that declares no definition there is a not_applicable row saying so, and `cadbench estimate`
replays full-size cells. Skipped only where the `sam2` extra is not installed."""

import importlib.util
import json

import pytest
import torch
from cadbench_in_process import cadbench_main

from cadbench.families import SAM, SAM2, family_of
from cadbench.families import sam2 as sam2_family
from cadbench.harness.grid import make_cell
from cadbench.methods import BUILTIN_METHODS
from cadbench.training.levers import CheckpointedBlock, not_applicable
from cadbench.training.setup import make_training_setup

pytestmark = pytest.mark.skipif(sam2_family.missing_requirement() is not None,
                                reason=f"the sam2 extra is not installed: {sam2_family.EXTRA}")
DEFINED = ("decoder_only", "full", "lora", "peft", "cad", "sam_adapter")
_needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="the peft extra is not installed")
UNTRAINED = ("zero_shot",)  # defined on SAM 2 too; trains nothing (its own test below)


@pytest.mark.parametrize("method", [pytest.param(method, marks=_needs_peft) if method == "peft" else method
                                    for method in DEFINED])
def test_each_defined_method_takes_a_step_changing_exactly_its_trainable_weights(method):
    setup = make_training_setup(make_cell(method, "sam2_test_scale", 2))
    model = setup.trainee.method
    assert family_of(model.sam).name == SAM2
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = setup.step()
    assert torch.isfinite(loss)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    decoder = {name for name in before if name.startswith("sam.sam_mask_decoder.")}
    # conv_s0 and conv_s1 (the decoder's own projections of the high-resolution features) train with it
    assert {"sam.sam_mask_decoder.conv_s0.weight", "sam.sam_mask_decoder.conv_s1.weight"} <= changed
    if method == "decoder_only":
        assert trainable == decoder
    elif method == "cad":
        adapter = {name for name in before if name.startswith("adapter.")}
        assert adapter and trainable == decoder | adapter and adapter & changed
    elif method == "sam_adapter":  # SAM2-Adapter's prompt generator, outside Meta's modules
        generator = {name for name in before if name.startswith("prompt_generator.")}
        assert generator and trainable == decoder | generator and generator & changed
        assert any(name.startswith("prompt_generator.shared_up.") for name in changed)
    elif method in ("lora", "peft"):  # SAMed's branches (linear_a/b_q/v) or peft's LoRA (lora_A/B) on each qkv
        branches = {name for name in before if ".attn.qkv.linear_" in name or ".attn.qkv.lora_" in name}
        assert branches and all(name.startswith("sam.image_encoder.trunk.blocks.") for name in branches)
        assert trainable == decoder | branches
        assert any(part in name for name in changed for part in (".linear_b_", ".lora_B."))  # B (zeros) learns
    else:
        encoder = {name for name in before if name.startswith("sam.image_encoder.")}
        assert trainable == decoder | encoder
        assert any(name.startswith("sam.image_encoder.trunk.") for name in changed)
    # the video modules never run in image mode and never train
    assert not any(name.startswith(("sam.memory_attention.", "sam.memory_encoder.")) for name in trainable)


def test_zero_shot_takes_an_inference_step_on_sam2_and_changes_nothing():
    setup = make_training_setup(make_cell("zero_shot", "sam2_test_scale", 2))
    before = {name: tensor.clone() for name, tensor in setup.module.state_dict().items()}
    assert not setup.trains and torch.isfinite(setup.step())
    assert all(torch.equal(before[name], tensor) for name, tensor in setup.module.state_dict().items())
    assert not_applicable(make_cell("zero_shot", "sam2.1_hiera_t", 1)) is None


def test_a_method_that_declares_no_definition_on_sam2_is_not_applicable_with_a_reason_naming_the_family():
    class SamOnly(BUILTIN_METHODS["decoder_only"]):  # a plugin written before SAM 2.1 existed
        name = "sam_only"
        families = (SAM,)

    assert set(DEFINED) | set(UNTRAINED) == set(BUILTIN_METHODS)  # every built-in method is defined on SAM 2.1
    assert SamOnly.not_defined_on(SAM2) == "sam_only declares no definition on the SAM 2.1 (Hiera image encoder) family"
    assert SamOnly.not_defined_on(SAM) is None


@pytest.mark.parametrize("method", ["full", "lora", "sam_adapter"])
def test_checkpointing_wraps_every_hiera_block_and_changes_no_update(method):
    plain = make_training_setup(make_cell(method, "sam2_test_scale", 2))
    checkpointed = make_training_setup(make_cell(method, "sam2_test_scale", 2, checkpointing="encoder"))
    blocks = checkpointed.trainee.method.sam.image_encoder.trunk.blocks
    assert len(blocks) == 5 and all(isinstance(block, CheckpointedBlock) for block in blocks)
    assert torch.allclose(plain.step(), checkpointed.step())
    pairs = zip(plain.trainee.method.named_parameters(), checkpointed.trainee.method.named_parameters())
    for (name, a), (_, b) in pairs:
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize("levers", [{"lean_encoder": "on", "micro_batch": 1}, {"frozen_dtype": "bf16"}])
def test_the_levers_of_a_frozen_encoder_take_a_real_step_on_sam2(levers):
    cell = make_cell("decoder_only", "sam2_test_scale", 2, **levers)
    assert not_applicable(cell) is None
    assert torch.isfinite(make_training_setup(cell).step())


def test_estimate_gives_rows_for_hiera_t(tmp_path):
    result = cadbench_main("estimate", "--backbone", "sam2.1_hiera_t", "--methods",
                           "decoder_only,full,lora,sam_adapter",
                           "--batch-sizes", "1", "--precision", "fp32", "--out", tmp_path / "out", "--no-progress",
                           "--jobs", "1")
    assert result.returncode == 0, result.stderr
    rows = {row["method"]: row for row in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())
            if "status" in row}
    assert rows["decoder_only"]["status"] == rows["full"]["status"] == "ok"
    assert rows["decoder_only"]["memory_source"] == rows["full"]["memory_source"] == "estimated"
    assert 0 < rows["decoder_only"]["peak_memory_bytes"] < rows["full"]["peak_memory_bytes"]
    assert rows["decoder_only"]["trainable_params"] == 4_215_109
    assert rows["full"]["trainable_params"] == 4_215_109 + 27_219_136
    assert rows["lora"]["status"] == "ok"
    assert rows["decoder_only"]["peak_memory_bytes"] < rows["lora"]["peak_memory_bytes"] \
        < rows["full"]["peak_memory_bytes"]
    assert rows["lora"]["trainable_params"] == 4_215_109 + hiera_lora_params(HIERA_T_STAGES, embed_dim=96)
    assert rows["sam_adapter"]["status"] == "ok"
    assert rows["sam_adapter"]["trainable_params"] == 4_215_109 + 57_621  # + SAM2-Adapter's generator on hiera_t
    assert rows["lora"]["peak_memory_bytes"] < rows["sam_adapter"]["peak_memory_bytes"] \
        < rows["full"]["peak_memory_bytes"]


# Hiera-T (sam2.1_hiera_t.yaml): embed_dim 96, blocks per stage (1, 2, 7, 2); each stage after the first doubles the
# width in its first block, whose attention goes from the old width to the new one.
HIERA_T_STAGES = (1, 2, 7, 2)


def hiera_lora_params(stages: tuple[int, ...], embed_dim: int, rank: int = 4) -> int:
    """Per block, for q and for v: A (rank x width in) and B (width out x rank), no biases."""
    total, width = 0, embed_dim
    for index, blocks in enumerate(stages):
        for block in range(blocks):
            width_in, width_out = (width, 2 * width) if index > 0 and block == 0 else (width, width)
            total += 2 * rank * (width_in + width_out)
            width = width_out
    return total


def test_lora_on_hiera_starts_from_the_frozen_model_and_wraps_every_blocks_qkv():
    from cadbench.backbones import build_sam
    from cadbench.datasets.batch import random_batch
    from cadbench.methods import Lora
    from cadbench.methods.lora import LoraQkv

    sam = build_sam("sam2_test_scale").sam
    images = random_batch(128, 2).images
    with torch.no_grad():
        expected = sam.image_encoder(sam.preprocess(images))  # SAM 2's features as built, before any branch
    blocks = sam.image_encoder.trunk.blocks
    originals = [block.attn.qkv for block in blocks]
    method = Lora(sam)
    for block, original in zip(blocks, originals):
        wrapped = block.attn.qkv
        assert isinstance(wrapped, LoraQkv) and wrapped.qkv is original and not original.weight.requires_grad
        assert wrapped.linear_a_q.weight.shape == (4, original.in_features)
        assert wrapped.linear_b_v.weight.shape == (original.out_features // 3, 4)
    assert any(block.attn.qkv.out != block.attn.qkv.qkv.in_features for block in blocks)  # a widening block
    with torch.no_grad():
        adapted = method.image_embeddings(images)
    assert isinstance(adapted, tuple) and len(adapted) == len(expected)
    for a, b in zip(adapted, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # B = 0: bit for bit the model as built


def test_cad_on_sam2_adds_its_adapter_to_the_level_the_decoder_reads_and_says_it_is_cadbenchs_own(capsys):
    from cadbench.backbones import build_sam
    from cadbench.cli import main
    from cadbench.datasets.batch import random_batch
    from cadbench.methods import CAD
    from cadbench.methods.cad import ADAPTER_SCALE

    sam = build_sam("sam2_test_scale").sam
    images = random_batch(128, 2).images
    method = CAD(sam).eval()
    with torch.no_grad():
        features = sam.image_encoder(sam.preprocess(images))
        adapted = method.image_embeddings(images)
        adapter_output = method.adapter(method.adapter_input(images))
    assert adapter_output.shape == features[-1].shape  # the stride-16 level: its grid and width
    for finer, unchanged in zip(adapted[:-1], features[:-1]):
        torch.testing.assert_close(finer, unchanged, rtol=0, atol=0)
    torch.testing.assert_close(adapted[-1], features[-1] + ADAPTER_SCALE * adapter_output)
    assert main(["list", "--methods", "cad", "--backbone", "sam2.1_hiera_t,vit_b"]) == 0
    listed = " ".join(capsys.readouterr().out.split())  # as read: wrapped to a terminal's width or not
    assert "on SAM 2.1 (Hiera image encoder): cadbench's own extension of CAD" in listed
    assert listed.count("own extension") == 1  # on SAM it is the paper's
    assert main(["list", "--json", "--methods", "cad", "--backbone", "sam2.1_hiera_t,vit_b"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["own_definition"].startswith("cadbench's own extension") and rows[1]["own_definition"] is None


def test_cad_on_sam2_with_the_lean_encoder_gives_the_plain_steps_loss():
    torch.manual_seed(0)
    plain = make_training_setup(make_cell("cad", "sam2_test_scale", 2))
    torch.manual_seed(0)
    lean = make_training_setup(make_cell("cad", "sam2_test_scale", 2, lean_encoder="on", encoder_chunk=1))
    assert not_applicable(make_cell("cad", "sam2_test_scale", 2, lean_encoder="on")) is None
    torch.testing.assert_close(lean.step(), plain.step())


def test_sam2_adapter_counts_the_references_trainable_parameters_and_groups_blocks_by_input_grid():
    """140,650: the reference's own `PromptGenerator` (SAM2-Adapter branch of tianrun-chen/SAM-Adapter-PyTorch,
    hieradet.py at db7ee31), built at its defaults (hiera_l), counted outside this project. 3,096 of them sit in the
    four per-block MLPs its forward never calls (lightweight_mlp2_6, 3_36, 4_3, 4_4)."""
    from cadbench.backbones import build_sam
    from cadbench.methods import SamAdapter

    with torch.device("meta"):
        method = SamAdapter(build_sam("sam2.1_hiera_l").sam)
    generator = method.prompt_generator
    assert sum(p.numel() for p in generator.parameters()) == 140_650
    assert generator.groups == [0] * 3 + [1] * 6 + [2] * 36 + [3] * 3  # hiera_l's stages: 2, 6, 36, 4 blocks
    assert [len(mlps) for mlps in generator.lightweight_mlps] == [3, 7, 37, 5]
    never_run = [generator.lightweight_mlps[1][6], generator.lightweight_mlps[2][36],
                 generator.lightweight_mlps[3][3], generator.lightweight_mlps[3][4]]
    assert sum(p.numel() for mlp in never_run for p in mlp.parameters()) == 3_096
    assert all(p.requires_grad for p in generator.parameters())


def test_sam2_adapter_runs_metas_hiera_and_neck_exactly_when_its_prompts_are_zero():
    from cadbench.backbones import build_sam
    from cadbench.datasets.batch import random_batch
    from cadbench.methods import SamAdapter

    torch.manual_seed(0)
    method = SamAdapter(build_sam("sam2_test_scale").sam).eval()
    with torch.no_grad():
        for up in method.prompt_generator.shared_up:
            up.weight.zero_(), up.bias.zero_()
        images = random_batch(128, 2).images
        prompted = method.image_embeddings(images)
        metas = method.sam.image_encoder(method.normalize(images))
    assert len(prompted) == len(metas) == 3
    for ours, theirs in zip(prompted, metas):
        assert torch.equal(ours, theirs)
    with torch.no_grad():  # and the prompts do change them once they are not zero
        method.prompt_generator.shared_up[0].bias.fill_(0.5)
        assert not torch.equal(method.image_embeddings(images)[0], metas[0])


def test_every_method_takes_a_step_at_another_image_size_and_the_estimate_is_exact_there():
    """SAM 2 at 256 px instead of the test scale's 128 (`--image-size`, a multiple of 32): every method steps, and
    the fake replay equals the real CPU replay (CAD's adapter pools to the resized prompt grid)."""
    from cadbench.estimator import estimate_setup

    for method in DEFINED + UNTRAINED:
        if method == "peft" and importlib.util.find_spec("peft") is None:
            continue
        setup = make_training_setup(make_cell(method, "sam2_test_scale", 2, image_size=256))
        assert torch.isfinite(setup.step()), method
    cell = make_cell("cad", "sam2_test_scale", 2, image_size=256)
    fake = estimate_setup(lambda: make_training_setup(cell))
    real = estimate_setup(lambda: make_training_setup(cell), fake=False)
    assert fake.peak_bytes == real.peak_bytes and fake.breakdown == real.breakdown
