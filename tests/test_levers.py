"""The lever registry: which levers apply to which method, refusals before anything runs, not_applicable rows, and
the estimator replaying every lever exactly as a real CPU run allocates."""

import json

import pytest

from cadbench.cli import main
from cadbench.errors import CadbenchError
from cadbench.estimator import estimate_setup
from cadbench.harness.grid import expand_grid
from cadbench.methods import BUILTIN_METHODS
from cadbench.training.levers import LeverNotApplicable, apply_levers, levers_of, not_applicable
from cadbench.training.setup import make_training_setup, prepare
from cadbench.vocabulary.cell import Cell

NO_GRAD_METHODS = ("decoder_only", "cad", "zero_shot")
THROUGH_ENCODER = tuple(m for m in BUILTIN_METHODS if m not in NO_GRAD_METHODS)


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_each_method_takes_exactly_one_of_checkpointing_and_the_lean_encoder(method):
    checkpointed = not_applicable(Cell(method, "test_scale", 2, checkpointing="encoder"))
    lean = not_applicable(Cell(method, "test_scale", 2, lean_encoder="on"))
    if method in NO_GRAD_METHODS:
        assert checkpointed and "runs under no_grad" in checkpointed and lean is None
    else:
        assert lean and "cannot run apart" in lean and checkpointed is None
    for levers in ({"precision": "fp16"}, {"frozen_dtype": "bf16"}):
        assert not_applicable(Cell(method, "test_scale", 2, **levers)) is None  # these apply to every method
    accumulating = not_applicable(Cell(method, "test_scale", 2, micro_batch=1))  # to every method that trains
    if method == "zero_shot":
        assert accumulating == ("micro-batch 1 does not apply to zero_shot: it does not train: there is no gradient "
                                "to accumulate")
    else:
        assert accumulating is None


def test_applying_a_lever_the_method_cannot_take_is_refused_by_name():
    cell = Cell("cad", "test_scale", 2, checkpointing="encoder")
    with pytest.raises(LeverNotApplicable, match="checkpointed encoder does not apply to cad"):
        apply_levers(cell, prepare("cad", "test_scale"))


def test_the_plain_cell_has_no_levers_and_keeps_its_key():
    plain = Cell("sam_adapter", "vit_b", 4)
    assert levers_of(plain) == [] and plain.key == "sam_adapter/vit_b/4/fp32"
    levered = Cell("sam_adapter", "vit_b", 4, "fp16", checkpointing="encoder", frozen_dtype="bf16", micro_batch=2)
    assert levered.key == "sam_adapter/vit_b/4/fp16/checkpointing=encoder/frozen_dtype=bf16/micro_batch=2"
    assert levered.plain == Cell("sam_adapter", "vit_b", 4, "fp16")
    assert Cell.from_row(levered.as_dict()) == levered


@pytest.mark.parametrize("fields, message", [
    ({"checkpointing": "blocks"}, r"unknown checkpointing 'blocks' \(--checkpointing\); valid: none, encoder"),
    ({"frozen_dtype": "fp8"}, r"unknown frozen_dtype 'fp8' \(--frozen-dtype\); valid: fp32, bf16"),
    ({"lean_encoder": "yes"}, r"unknown lean_encoder 'yes' \(--lean-encoder\); valid: off, on"),
    ({"micro_batch": 8}, r"--micro-batch 8 is larger than the batch size 4.*valid for batch size 4: 1, 2, 4"),
    ({"micro_batch": 3}, r"--micro-batch 3 does not divide the batch size 4"),
    ({"encoder_chunk": 2}, r"--encoder-chunk 2 needs --lean-encoder on"),
    ({"encoder_chunk": 0, "lean_encoder": "on"}, r"--encoder-chunk must be a positive integer"),
])
def test_a_lever_value_that_makes_no_sense_is_refused_naming_the_flag(fields, message):
    with pytest.raises(CadbenchError, match=message):
        Cell("decoder_only", "vit_b", 4, **fields)


def test_a_micro_batch_of_the_whole_batch_is_the_plain_cell():
    assert Cell("cad", "vit_b", 4, micro_batch=4) == Cell("cad", "vit_b", 4)


@pytest.mark.parametrize("flags, culprit", [
    (["--checkpointing", "none,blocks"], "unknown checkpointing 'blocks' (--checkpointing); valid: none, encoder"),
    (["--micro-batch", "8"], "--micro-batch 8 is larger than the batch size 4"),
    (["--micro-batch", "two"], "--micro-batch takes positive integers or none, got 'two'"),
    (["--precision", "fp8"], "unknown precision 'fp8'; valid: bf16, fp16, fp32"),
    (["--encoder-chunk", "2"], "--encoder-chunk 2 needs --lean-encoder on"),
])
def test_bad_lever_flags_stop_the_run_in_one_line_before_anything_is_written(tmp_path, capsys, flags, culprit):
    out = tmp_path / "out"
    argv = ["estimate", "--methods", "cad", "--backbone", "test_scale", "--batch-sizes", "4", "--out", str(out),
            "--no-progress", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and culprit in err
    assert not out.exists()


def test_a_lever_that_cannot_apply_to_one_method_is_a_row_with_the_reason_not_a_refusal(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["estimate", "--methods", "cad,sam_adapter", "--backbone", "test_scale", "--batch-sizes", "2",
            "--checkpointing", "encoder", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    rows = {row["method"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["cad"]["status"] == "not_applicable" and rows["cad"]["peak_memory_bytes"] is None
    assert "checkpointed encoder does not apply to cad" in rows["cad"]["error"]
    assert rows["cad"]["null_reasons"]["peak_memory_bytes"].startswith("not measured: checkpointed encoder")
    assert rows["sam_adapter"]["status"] == "ok" and rows["sam_adapter"]["checkpointing"] == "encoder"
    printed = capsys.readouterr().out
    assert "not applicable" in printed and "sam_adapter + checkpointed encoder" in printed
    assert main(argv) == 0  # resume: a not_applicable row is finished, not retried
    assert "no cell measured, 2 already finished" in capsys.readouterr().out


def test_the_grid_crosses_levers_and_an_encoder_chunk_only_with_the_lean_encoder():
    cells = expand_grid(["cad"], ["vit_b"], [4], ["fp32"], {"lean_encoder": ["off", "on"], "encoder_chunk": [1, 2]})
    assert [(c.lean_encoder, c.encoder_chunk) for c in cells] == [("off", 1), ("on", 1), ("on", 2)]


LEVER_CELLS = [
    ("sam_adapter", {"checkpointing": "encoder"}),
    ("sam_adapter", {"frozen_dtype": "bf16"}),
    ("sam_adapter", {"precision": "fp16"}),
    ("decoder_only", {"micro_batch": 1}),
    ("decoder_only", {"lean_encoder": "on"}),
    ("cad", {"lean_encoder": "on", "frozen_dtype": "bf16", "precision": "fp16", "micro_batch": 1}),
    ("lora", {"checkpointing": "encoder", "frozen_dtype": "bf16", "precision": "bf16"}),
    ("zero_shot", {"lean_encoder": "on", "frozen_dtype": "bf16", "precision": "fp16"}),
]


@pytest.mark.parametrize("method, levers", LEVER_CELLS)
def test_the_estimator_replays_each_lever_as_a_real_cpu_run_allocates(method, levers):
    def make():
        return make_training_setup(Cell(method, "test_scale", 2, **levers))

    fake, real = estimate_setup(make), estimate_setup(make, fake=False)
    assert (fake.peak_bytes, fake.breakdown) == (real.peak_bytes, real.breakdown)
    if levers.get("lean_encoder") != "on" and levers.get("checkpointing") != "encoder":
        # (With the lean or the checkpointed encoder, the real CPU run computes the fused attention's values
        # outside the counted dispatch (cuda_sdpa), so only the fake replay counts its FLOPs.)
        assert fake.flops_per_step == real.flops_per_step
