"""`cadbench list` and the CLI's error contract."""

import json
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


# Parameters each method adds to SAM (all of them trainable), per backbone: every built-in method needs an entry.
ADDED_PARAMS = {
    "decoder_only": lambda backbone: 0,
    "cad": lambda backbone: CAD_ADAPTER,
    "sam_adapter": sam_adapter_params,
}


@pytest.fixture(scope="module")
def listed():
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["list", "--json"]) == 0
    return {(row["method"], row["backbone"]): row for row in json.loads(out.getvalue())}


def test_list_json_has_every_method_and_backbone(listed):
    assert set(listed) == {(m, b) for m in BUILTIN_METHODS for b in ENCODER_PARAMS}


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_list_json_counts_full_size_models(listed, method):
    assert method in ADDED_PARAMS, f"give {method}'s expected parameter count in ADDED_PARAMS"
    for backbone, encoder in ENCODER_PARAMS.items():
        sam_total = encoder + MASK_DECODER + PROMPT_ENCODER
        added = ADDED_PARAMS[method](backbone)
        assert listed[method, backbone]["trainable_params"] == MASK_DECODER + added
        assert listed[method, backbone]["total_params"] == sam_total + added
        assert not listed[method, backbone]["test_scale"]


def test_list_table_labels_test_scale(capsys):
    assert main(["list", "--backbone", "test_scale", "--methods", "cad"]) == 0
    assert "test_scale (test scale)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, culprit", [
    (["list", "--methods", "cad,nope"], f"unknown method 'nope'; valid: {', '.join(sorted(BUILTIN_METHODS))}"),
    (["list", "--backbone", "vit_x"], "unknown backbone 'vit_x'; valid: test_scale, vit_b, vit_h, vit_l"),
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
    for command in ([sys.executable, "-m", "cadbench"], ):
        result = subprocess.run([*command, "list", "--json", "--backbone", "test_scale"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert {row["method"] for row in json.loads(result.stdout)} == set(BUILTIN_METHODS)
    bad = subprocess.run([sys.executable, "-m", "cadbench", "list", "--methods", "nope"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_parsing_arguments_and_help_import_no_heavy_module():
    """`cadbench --help` and argument errors must not wait for torch, pandas or matplotlib to import."""
    probe = ("import sys; from cadbench.cli import build_parser; build_parser().parse_args(['run']); "
             "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'segment_anything') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
