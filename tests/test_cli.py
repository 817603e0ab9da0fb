"""`cadbench list` and the CLI's error contract."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cadbench.cli import main

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


def test_list_json_counts_full_size_models(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_cell = {(row["method"], row["backbone"]): row for row in rows}
    assert set(by_cell) == {(m, b) for m in ("cad", "decoder_only", "sam_adapter") for b in ENCODER_PARAMS}
    for backbone, encoder in ENCODER_PARAMS.items():
        sam_total = encoder + MASK_DECODER + PROMPT_ENCODER
        assert by_cell["decoder_only", backbone]["trainable_params"] == MASK_DECODER
        assert by_cell["decoder_only", backbone]["total_params"] == sam_total
        assert by_cell["cad", backbone]["trainable_params"] == MASK_DECODER + CAD_ADAPTER
        assert by_cell["cad", backbone]["total_params"] == sam_total + CAD_ADAPTER
        adapter = sam_adapter_params(backbone)
        assert by_cell["sam_adapter", backbone]["trainable_params"] == MASK_DECODER + adapter
        assert by_cell["sam_adapter", backbone]["total_params"] == sam_total + adapter
        assert not by_cell["cad", backbone]["test_scale"]


def test_list_table_labels_test_scale(capsys):
    assert main(["list", "--backbone", "test_scale", "--methods", "cad"]) == 0
    assert "test_scale (test scale)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, culprit", [
    (["list", "--methods", "cad,lora"], "unknown method 'lora'; valid: cad, decoder_only, sam_adapter"),
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
    assert {row["method"] for row in json.loads(result.stdout)} == {"cad", "decoder_only", "sam_adapter"}


def test_console_entry_points_run(tmp_path):
    for command in ([sys.executable, "-m", "cadbench"], ):
        result = subprocess.run([*command, "list", "--json", "--backbone", "test_scale"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert {row["method"] for row in json.loads(result.stdout)} == {"cad", "decoder_only", "sam_adapter"}
    bad = subprocess.run([sys.executable, "-m", "cadbench", "list", "--methods", "nope"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
