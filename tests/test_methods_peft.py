"""peft: Hugging Face peft's own adapter layers in the image encoder, configured inline or by a peft config file."""

import json

import pytest
import torch

peft = pytest.importorskip("peft", reason="the peft extra is not installed (pip install 'cadbench[peft]')")

from cadbench.backbones import build_sam  # noqa: E402
from cadbench.errors import CadbenchError  # noqa: E402
from cadbench.harness.grid import make_cell  # noqa: E402
from cadbench.estimator import estimate_setup  # noqa: E402
from cadbench.datasets.batch import random_batch  # noqa: E402
from cadbench.params import count_parameters  # noqa: E402
from cadbench.registry import build_method, parse_method_spec  # noqa: E402
from cadbench.training.setup import make_training_setup  # noqa: E402
from cadbench.training.step import training_step  # noqa: E402
from cadbench.vocabulary.cell import Cell  # noqa: E402

EMBED_DIM = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}
DEPTH = {"vit_b": 12, "vit_l": 24, "vit_h": 32}
MASK_DECODER = 4_058_340
IA3 = "peft:type=ia3,target_modules=qkv+lin2,feedforward_modules=lin2"


def adapter_params(spec: str, backbone: str) -> int:
    """What each configuration adds per block, from the layer shapes peft documents, times the depth."""
    dim = EMBED_DIM[backbone]
    per_block = {
        "peft": 8 * dim + 3 * dim * 8,  # LoRA r 8 on qkv (dim -> 3 dim): A (8 x dim), B (3 dim x 8)
        "peft:r=2,target_modules=qkv+proj": (2 * dim + 3 * dim * 2) + (2 * dim + dim * 2),
        "peft:type=loha,r=4": 2 * (3 * dim * 4 + 4 * dim),  # two Hadamard factors, each (out x r) and (r x in)
        IA3: 3 * dim + 4 * dim,  # a scale per qkv output, and per lin2 input (feed-forward: 4 dim)
    }[spec]
    # 'proj' is matched as a name suffix, so peft also adapts the patch embedding's Conv2d(3, dim, 16, stride 16):
    # A is Conv2d(3, r, 16), B is Conv2d(r, dim, 1).
    patch_embed = 2 * 3 * 16 * 16 + 2 * dim if "proj" in spec else 0
    return DEPTH[backbone] * per_block + patch_embed


@pytest.mark.parametrize("spec", ["peft", "peft:r=2,target_modules=qkv+proj", "peft:type=loha,r=4", IA3])
@pytest.mark.parametrize("backbone", ["vit_b", "vit_h"])
def test_parameter_counts_follow_the_layers_peft_injects(spec, backbone):
    counts = count_parameters(spec, backbone)
    assert counts.trainable_params == MASK_DECODER + adapter_params(spec, backbone)


@pytest.mark.parametrize("spec, layer", [("peft", peft.tuners.lora.Linear),
                                         ("peft:type=loha", peft.tuners.loha.Linear),
                                         (IA3, peft.tuners.ia3.Linear)])
def test_the_adapter_layers_are_peft_own_and_only_they_and_the_decoder_train(spec, layer):
    method = build_method(spec, build_sam("test_scale").sam)
    encoder = method.sam.image_encoder
    assert all(isinstance(block.attn.qkv, layer) for block in encoder.blocks)
    trainable = {name for name, parameter in method.named_parameters() if parameter.requires_grad}
    in_encoder = {name for name in trainable if name.startswith("sam.image_encoder.")}
    assert in_encoder and all(".default" in name for name in in_encoder)  # peft's adapter named "default"
    assert trainable - in_encoder == {name for name, _ in method.named_parameters()
                                      if name.startswith("sam.mask_decoder.")}
    assert not any(parameter.requires_grad for parameter in method.sam.prompt_encoder.parameters())


def test_peft_lora_starts_as_meta_encoder_bit_for_bit():
    sam = build_sam("test_scale").sam
    images = random_batch(128, 2).images
    with torch.no_grad():
        expected = sam.image_encoder(sam.preprocess(images))
        method = build_method("peft", sam)
        torch.testing.assert_close(method.image_embeddings(images), expected, rtol=0, atol=0)  # B = 0


@pytest.mark.parametrize("spec", ["peft", IA3])
def test_the_estimate_replays_peft_layers_exactly(spec):
    cell = Cell.from_row({"method": "peft", "method_options": spec.partition(":")[2], "backbone": "test_scale",
                          "batch_size": 2, "precision": "fp32"})
    fake = estimate_setup(lambda: make_training_setup(cell))
    real = estimate_setup(lambda: make_training_setup(cell), fake=False)
    assert (fake.peak_bytes, fake.breakdown, fake.flops_per_step) == (real.peak_bytes, real.breakdown,
                                                                      real.flops_per_step)


def test_loha_trains_for_real_on_the_cpu():
    method = build_method("peft:type=loha", build_sam("test_scale").sam)
    adapter = method.sam.image_encoder.blocks[0].attn.qkv.hada_w1_a["default"]
    before = adapter.detach().clone()
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-3)
    for _ in range(2):
        training_step(method, optimizer, random_batch(128, 2))
    assert not torch.equal(adapter, before)


def test_inline_options_are_canonical_in_peft_field_order_with_defaults_left_out():
    spec = parse_method_spec("peft:lora_alpha=16,r=8,type=LoRA,target_modules=qkv")
    assert spec.options_text == "lora_alpha=16" and spec.label == "peft (lora_alpha 16)"
    # peft keeps target modules as a set: their order does not make another cell
    assert parse_method_spec("peft:target_modules=qkv+proj,r=4").options_text == "r=4,target_modules=proj+qkv"
    assert parse_method_spec("peft:target_modules=proj+qkv").options == parse_method_spec(
        "peft:target_modules=qkv+proj").options
    config = parse_method_spec("peft:target_modules=qkv+proj,r=4").options.peft_config()
    assert isinstance(config, peft.LoraConfig) and config.r == 4 and set(config.target_modules) == {"qkv", "proj"}


def test_a_config_file_reads_as_if_its_keys_were_inline_and_inline_keys_win(tmp_path):
    peft.LoraConfig(r=16, lora_alpha=32, target_modules=["qkv", "proj"]).save_pretrained(tmp_path)
    path = tmp_path / "adapter_config.json"
    assert json.loads(path.read_text())["inference_mode"] is not None  # bookkeeping keys are there, and ignored
    from_file = parse_method_spec(f"peft:config={path}")
    inline = parse_method_spec("peft:r=16,lora_alpha=32,target_modules=qkv+proj")
    assert from_file.options == inline.options and from_file.text == "peft:r=16,target_modules=proj+qkv,lora_alpha=32"
    assert parse_method_spec(f"peft:config={path},r=2").options_text == "r=2,target_modules=proj+qkv,lora_alpha=32"
    ia3_path = tmp_path / "ia3.json"
    ia3_path.write_text(json.dumps({"peft_type": "IA3", "target_modules": ["qkv", "lin2"],
                                    "feedforward_modules": ["lin2"]}))
    assert parse_method_spec(f"peft:config={ia3_path}").options == parse_method_spec(IA3).options


@pytest.mark.parametrize("options, message", [
    ("nope=1", "method peft: unknown option 'nope'; valid: config, type, r, target_modules, "),
    ("r=eight", "method peft: option r=eight: expected an integer (r: int, peft's LoraConfig)"),
    ("bias=some", "method peft: option bias=some: expected one of none, all, lora_only"),
    ("r=0", "method peft: peft refused the options r=0: `r` should be a positive integer value"),
    ("target_modules=nope", "method peft: peft refused the options target_modules=nope: Target modules {'nope'} "
                            "not found"),
    ("type=ia3", "method peft: peft refused the options type=ia3: Please specify `feedforward_modules`"),
    ("type=prompt_tuning", "method peft: unknown peft type 'prompt_tuning'; valid: "),
    ("config=/nonexistent.json", "method peft: config=/nonexistent.json: No such file or directory"),
])
def test_an_invalid_config_is_refused_in_one_line_naming_the_key(options, message):
    with pytest.raises(CadbenchError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        make_cell("peft", "vit_b", 1, method_options=options)
    assert "\n" not in str(raised.value)


def test_a_config_file_value_that_inline_text_cannot_hold_is_refused(tmp_path):
    path = tmp_path / "regex.json"
    path.write_text(json.dumps({"peft_type": "LORA", "target_modules": ".*qkv"}))
    with pytest.raises(CadbenchError, match="config file key 'target_modules': '.\\*qkv' cannot be recorded"):
        parse_method_spec(f"peft:config={path}")
    path.write_text(json.dumps({"peft_type": "LORA", "rank_pattern": {"qkv": 4}}))
    with pytest.raises(CadbenchError, match="config file key 'rank_pattern'"):
        parse_method_spec(f"peft:config={path}")
    path.write_text(json.dumps({"peft_type": "LORA", "not_a_field": 1}))
    with pytest.raises(CadbenchError, match="config file key 'not_a_field' is not a field of peft's LoraConfig"):
        parse_method_spec(f"peft:config={path}")
