"""`cadbench.run`'s closing summary: how the cells were measured, and why some figures are blank."""

from __future__ import annotations

from cadbench.api import mode_chooser
from cadbench.report.terminal import blanks_explained, cells_sentence
from cadbench.cli import main
from cadbench.harness.grid import expand_grid
from cadbench.harness.options import RunOptions


def test_the_summary_says_how_many_cells_were_estimated_and_how_many_ran():
    assert cells_sentence(["estimate"] * 36 + ["cpu"] * 12, 0) == \
        "36 cells estimated, 12 cells run on the CPU, 0 already finished"
    assert cells_sentence(["cuda"], 3) == "1 cell run on CUDA, 3 already finished"
    assert cells_sentence([], 8) == "no cell measured, 8 already finished"


def test_the_mission_command_on_a_cpu_machine_explains_its_blanks_and_names_the_command_that_fills_them():
    cells = expand_grid(["cad", "sam_adapter"], ["vit_h"], [1, 2, 4, 8], ["fp32"])
    line = blanks_explained(cells, mode_chooser("auto", False, cuda=False), RunOptions())
    assert line.startswith("Why throughput and quality are blank: 8 of 8 cells were estimated")
    assert "needs one" in line and "\n" not in line
    assert "`cadbench run --methods cad,sam_adapter --backbone test_scale`" in line


def test_a_run_with_test_scale_cells_says_they_ran_on_the_cpu_and_a_memory_only_run_says_nothing():
    cells = expand_grid(["cad"], ["vit_b", "test_scale"], [1], ["fp32"])
    line = blanks_explained(cells, mode_chooser("auto", False, cuda=False), RunOptions())
    assert "1 of 2 cells were estimated" in line and "test_scale cells marked cpu ran for real on this CPU" in line
    assert blanks_explained(cells, mode_chooser("auto", True, cuda=False), RunOptions(estimate_only=True)) is None
    assert blanks_explained(cells, mode_chooser("auto", False, cuda=True), RunOptions()) is None


def test_a_run_of_estimated_cells_prints_the_explanation_and_the_counts(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["run", "--methods", "decoder_only", "--backbone", "vit_b", "--batch-sizes", "1", "--no-progress",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Why throughput and quality are blank: 1 of 1 cells were estimated" in out
    assert "1 cell estimated, 0 already finished; results in" in out and "results.jsonl" in out
