"""Estimates on several cores (launchers/estimates.py): the same rows, in the same order, as one after the other."""

import json
import subprocess
import sys

import pytest
from cadbench_in_process import cadbench_main

from cadbench.harness.launchers import LocalConfig
from cadbench.harness.launchers.base import CellRun
from cadbench.harness.launchers.estimates import estimate_in_order
from cadbench.harness.options import RunContext, RunOptions
from cadbench.vocabulary.cell import Cell


def _rows(out):
    return json.loads((out / "results.json").read_text())["rows"]  # the run's start time is in "environment"


def test_estimates_in_two_processes_give_the_rows_of_one_process_in_the_same_order(tmp_path):
    # two full-size groups (one warm replay each: fp32 and bf16), listed interleaved with the batch sizes
    grid = ("--methods", "decoder_only", "--backbone", "vit_b", "--batch-sizes", "2,1", "--precision", "bf16,fp32",
            "--no-progress")
    one, two = tmp_path / "one", tmp_path / "two"
    # The one-process run in a fresh process, as a user's `cadbench estimate` is (the two-process run's workers are
    # fresh too): this test process has replayed other cells before, and after those the rows were still equal but
    # a timeline's points once differed in one digit (seen in the full suite, not alone).
    alone = subprocess.run([sys.executable, "-m", "cadbench", "estimate", *grid, "--jobs", "1", "--out", str(one)],
                           capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr
    assert cadbench_main("estimate", *grid, "--jobs", "2", "--out", two).returncode == 0
    assert _rows(two) == _rows(one)
    assert (two / "timelines.json").read_bytes() == (one / "timelines.json").read_bytes()


def test_test_scale_estimates_stay_in_this_process(monkeypatch):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_context", lambda *_: pytest.fail("a process was started"))
    runs = [CellRun(Cell(method, "test_scale", 1), "estimate") for method in ("decoder_only", "cad")]
    started = []
    rows = list(estimate_in_order(runs, RunOptions(), RunContext(), {}, lambda event, cell: started.append(cell),
                                  jobs=2))
    assert [cell for cell, _ in rows] == started == [run.cell for run in runs]
    assert all(row["status"] == "ok" for _, row in rows)


def test_jobs_must_be_at_least_one():
    with pytest.raises(Exception, match="--jobs must be at least 1"):
        LocalConfig(jobs=0)


def test_jobs_go_only_with_the_local_launcher():
    refused = cadbench_main("run", "--backbone", "test_scale", "--gpus", "0", "--jobs", "2", "--no-progress")
    assert refused.returncode == 2
    assert "--jobs spreads estimates over this machine's cores; it does not go with --launcher gpus" in refused.stderr


def test_cadbench_jobs_caps_the_default_number_of_estimate_processes(monkeypatch):
    from cadbench.harness.processes import default_jobs

    monkeypatch.delenv("CADBENCH_JOBS", raising=False)
    uncapped = default_jobs()
    monkeypatch.setenv("CADBENCH_JOBS", "1")
    assert default_jobs() == 1
    monkeypatch.setenv("CADBENCH_JOBS", "64")
    assert default_jobs() == uncapped  # a cap, never more than the cores and memory allow
    monkeypatch.setenv("CADBENCH_JOBS", "none")
    assert default_jobs() == uncapped  # not a positive number: ignored


def test_a_local_run_estimates_every_cell_in_one_stretch_before_its_device_cells(monkeypatch):
    """Estimates listed between device cells (the default grid's LiteMedSAM cells that are estimated, beside the
    ones that train on the CPU) join the others: one set of processes, never a new set after a device cell."""
    from cadbench.harness.launchers import local

    happened = []

    def estimate_in_order(runs, options, context, environment, on_progress, jobs):
        happened.append(("estimates", [run.cell.method for run in runs]))
        for run in runs:
            yield run.cell, {"status": "ok"}

    def run_in_fresh_process(cell, mode, options, context, environment):
        happened.append((mode, cell.method))
        return {"status": "ok"}

    monkeypatch.setattr(local, "estimate_in_order", estimate_in_order)
    monkeypatch.setattr(local, "run_in_fresh_process", run_in_fresh_process)
    runs = [CellRun(Cell("cad", "litemedsam", 1), "cpu"), CellRun(Cell("full", "litemedsam", 1), "estimate"),
            CellRun(Cell("decoder_only", "litemedsam", 1), "cpu"), CellRun(Cell("lora", "litemedsam", 1), "estimate")]
    launcher = local.LocalLauncher(LocalConfig(jobs=2))
    yielded = [cell.method for cell, _ in launcher.launch(runs, RunOptions(), RunContext(), {}, None,
                                                          lambda *args, **kwargs: None)]
    assert happened == [("estimates", ["full", "lora"]), ("cpu", "cad"), ("cpu", "decoder_only")]
    assert yielded == ["full", "lora", "cad", "decoder_only"]
