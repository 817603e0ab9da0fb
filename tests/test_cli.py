"""`cadbench list` and the CLI's error contract."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cadbench.cli import main
from cadbench.methods import BUILTIN_METHODS

# methods.md: encoder parameters per backbone; mask decoder and prompt encoder are the same for all.
ENCODER_PARAMS = {"vit_b": 89_670_912, "vit_l": 308_278_272, "vit_h": 637_026_048}
EMBED_DIM = {"vit_b": 768, "vit_l": 1024, "vit_h": 1280}
DEPTH = {"vit_b": 12, "vit_l": 24, "vit_h": 32}
MASK_DECODER, PROMPT_ENCODER = 4_058_340, 6_220
CAD_ADAPTER = (6 * 256 + 256) + 3 * (256 * 256 * 9 + 256 + 2 * 256)  # 1x1 lift + three conv/BatchNorm blocks


def sam_adapter_params(backbone: str) -> int:
    dim, rank = EMBED_DIM[backbone], EMBED_DIM[backbone] // 32
    handcrafted = 3 * rank * 16 * 16 + rank
    embedding_tune = dim * rank + rank
    mlps = DEPTH[backbone] * (rank * rank + rank)
    shared_up = rank * dim + dim
    return handcrafted + embedding_tune + mlps + shared_up


def lora_params(backbone: str, rank: int = 4) -> int:
    """SAMed: per block, A (r x dim) and B (dim x r) for q and for v, no biases."""
    return DEPTH[backbone] * 2 * 2 * rank * EMBED_DIM[backbone]


def peft_lora_params(backbone: str, rank: int = 8) -> int:
    """peft's LoRA (default r 8) on the whole fused qkv: per block, A (r x dim) and B (3 dim x r)."""
    return DEPTH[backbone] * (rank * EMBED_DIM[backbone] + 3 * EMBED_DIM[backbone] * rank)


# Parameters each method adds to SAM (all of them trainable), per backbone: every built-in method needs an entry.
ADDED_PARAMS = {
    "decoder_only": lambda backbone: 0,
    "cad": lambda backbone: CAD_ADAPTER,
    "sam_adapter": sam_adapter_params,
    "lora": lora_params,
    "full": lambda backbone: 0,
    "peft": peft_lora_params,
    "zero_shot": lambda backbone: 0,
}
# SAM's own parameters a method trains besides the mask decoder (full fine-tuning: the whole image encoder).
TRAINED_SAM_PARAMS = {"full": lambda backbone: ENCODER_PARAMS[backbone]}
UNTRAINED = ("zero_shot",)  # trains nothing, the mask decoder included


@pytest.fixture(scope="module")
def listed():
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["list", "--json"]) == 0
    return {(row["method"], row["backbone"]): row for row in json.loads(out.getvalue())}


def test_list_json_has_every_method_and_backbone(listed):
    """SAM's three backbones with every method; where the sam2 extra is installed, SAM 2.1's four too, and where
    the lite extra is, LiteMedSAM, with the methods defined on them (the others are named on stderr, not counted)."""
    from cadbench.backbones import BACKBONES, default_backbones, get_backbone, unavailable_backbones

    assert set(default_backbones()) >= set(ENCODER_PARAMS)
    shown = [name for name, spec in BACKBONES.items() if not spec.test_scale and name not in unavailable_backbones()]
    assert "litemedsam" in shown  # the test command installs every extra
    assert set(listed) == {(m, b) for b in shown for m in BUILTIN_METHODS
                           if BUILTIN_METHODS[m].not_defined_on(get_backbone(b).family) is None}
    assert {m for m, b in listed if b in ENCODER_PARAMS} == set(BUILTIN_METHODS)
    # LiteMedSAM's parts as bowang-lab/MedSAM's LiteMedSAM has them: TinyViT 5,726,740, prompt encoder 6,220, mask
    # decoder 4,058,340
    assert listed["zero_shot", "litemedsam"]["total_params"] == 5_726_740 + 6_220 + 4_058_340
    assert listed["decoder_only", "litemedsam"]["trainable_params"] == 4_058_340


def test_list_names_a_backbone_it_cannot_show_and_why(capsys, monkeypatch):
    import dataclasses

    from cadbench.backbones import BACKBONES

    monkeypatch.setitem(BACKBONES, "litemedsam", dataclasses.replace(
        BACKBONES["litemedsam"], missing_requirement=lambda: "needs the stand-in extra"))
    assert main(["list", "--methods", "decoder_only"]) == 0
    captured = capsys.readouterr()
    assert "cadbench: note: backbone litemedsam is not listed: it needs the stand-in extra" in captured.err
    assert "litemedsam" not in captured.out


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_list_json_counts_full_size_models(listed, method):
    assert method in ADDED_PARAMS, f"give {method}'s expected parameter count in ADDED_PARAMS"
    for backbone, encoder in ENCODER_PARAMS.items():
        sam_total = encoder + MASK_DECODER + PROMPT_ENCODER
        added = ADDED_PARAMS[method](backbone)
        trained = TRAINED_SAM_PARAMS.get(method, lambda backbone: 0)(backbone)
        decoder = 0 if method in UNTRAINED else MASK_DECODER
        assert listed[method, backbone]["trainable_params"] == decoder + trained + added
        assert listed[method, backbone]["total_params"] == sam_total + added
        assert not listed[method, backbone]["test_scale"]


def test_list_table_labels_test_scale(capsys):
    assert main(["list", "--backbone", "test_scale", "--methods", "cad"]) == 0
    assert "test_scale (test scale)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, culprit", [
    (["list", "--methods", "cad,nope"], f"unknown method 'nope'; valid: {', '.join(sorted(BUILTIN_METHODS))}"),
    (["list", "--backbone", "vit_x"], "unknown backbone 'vit_x'; valid: litemedsam, sam2.1_hiera_b+, sam2.1_hiera_l, "
                                      "sam2.1_hiera_s, sam2.1_hiera_t, sam2_test_scale, test_scale, vit_b, vit_h, vit_l"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_names_give_one_line_listing_valid_ones(capsys, argv, culprit):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and culprit in captured.err


def test_python_m_cadbench_works_from_the_repository_root():
    """There `cadbench/` of the checkout shadows the installed package; methods/ and datasets/ must still resolve."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "cadbench", "list", "--json", "--backbone", "test_scale"],
                            cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert {row["method"] for row in json.loads(result.stdout)} == set(BUILTIN_METHODS)


def test_console_entry_points_run(tmp_path):
    """The `cadbench` script pip installs and `python -m cadbench`, from a folder that is not the checkout: a
    refusal exits 2 with one line from the process (an argument error, refused before torch is imported; the
    unknown-name refusals' lines are checked in-process in test_bad_names_give_one_line_listing_valid_ones). That a
    whole command runs in a process of its own is test_python_m_cadbench_works_from_the_repository_root's."""
    script = Path(sys.executable).parent / "cadbench"
    assert script.is_file(), f"pip installed no {script}"
    for command in ([str(script)], [sys.executable, "-m", "cadbench"]):
        bad = subprocess.run([*command, "frobnicate"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1, command
        assert "invalid choice: 'frobnicate'" in bad.stderr


def test_parsing_arguments_and_help_import_no_heavy_module():
    """`cadbench --help` and argument errors must not wait for torch, pandas or matplotlib to import."""
    probe = ("import sys; from cadbench.cli import build_parser; build_parser().parse_args(['run']); "
             "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'segment_anything') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_list_imports_only_what_counting_on_the_meta_device_needs():
    """`cadbench list` needs torch and segment-anything (it builds each model on the meta device), not the result
    table or report libraries."""
    probe = ("import io, sys, contextlib; from cadbench.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()): main(['list', '--methods', 'cad', '--backbone', 'vit_b'])\n"
             "print(sorted(m for m in ('pandas', 'matplotlib', 'jinja2', 'peft') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_list_counts_a_method_with_its_options_and_shows_what_it_declares(capsys):
    assert main(["list", "--json", "--methods", "lora:rank=16,lora", "--backbone", "vit_b"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["method"], row["method_options"]) for row in rows] == [("lora", "rank=16"), ("lora", "")]
    assert rows[0]["trainable_params"] == MASK_DECODER + lora_params("vit_b", rank=16)
    assert rows[1]["trainable_params"] == MASK_DECODER + lora_params("vit_b")
    assert rows[0]["options"] == [{"name": "rank", "type": "int", "default": "4",
                                   "help": "rank r of each q and v branch (SAMed's default: 4)"}]
    assert main(["list", "--methods", "lora:rank=16,cad", "--backbone", "vit_b"]) == 0
    table = capsys.readouterr().out
    assert "rank: int, default 4" in table and "lora (rank 16)" in table


@pytest.mark.parametrize("argv, culprit", [
    (["list", "--methods", "lora:rnk=3"], "method lora: unknown option 'rnk'; valid: rank"),
    (["list", "--methods", "lora:rank=x,cad"],
     "method lora: option rank=x: expected an integer (rank: int, default 4)"),
    (["list", "--methods", "cad:rank=4"], "method cad: unknown option 'rank'; it takes no options"),
    (["list", "--methods", "rank=4,lora"], "method option 'rank=4' comes before any method name"),
])
def test_bad_method_options_give_one_line_naming_the_option_and_the_valid_ones(capsys, argv, culprit):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and culprit in captured.err


def test_a_bad_option_stops_a_run_before_anything_runs_or_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["estimate", "--methods", "cad,lora:rank=0", "--backbone", "test_scale", "--no-progress",
                 "--out", str(out)]) == 2
    assert "method lora: option rank=0: must be a positive integer" in capsys.readouterr().err
    assert not out.exists()


def test_parsing_method_specs_imports_no_heavy_module():
    probe = ("import sys; from cadbench.cli import build_parser; "
             "a = build_parser().parse_args(['run', '--methods', 'lora:rank=16,peft:type=lora,r=8,cad']); "
             "assert a.methods == ['lora:rank=16', 'peft:type=lora,r=8', 'cad'], a.methods; "
             "print(sorted(m for m in ('torch', 'pandas', 'peft', 'segment_anything') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_list_wraps_its_descriptions_to_the_terminal_and_leaves_pipes_one_line_each(capsys, monkeypatch):
    from cadbench.registry import parse_method_spec

    target_modules = next(info.help for info in parse_method_spec("peft").method.Options.declared()
                          if info.name == "target_modules")
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list", "--methods", "peft", "--backbone", "vit_b"]) == 0
    narrow = capsys.readouterr().out
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert target_modules in " ".join(narrow.split())  # every word kept, in order
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=(0, 0): os.terminal_size(fallback))  # a pipe
    assert main(["list", "--methods", "peft", "--backbone", "vit_b"]) == 0
    assert any(line.endswith(target_modules) for line in capsys.readouterr().out.splitlines())
