"""The memory gate: the default grid's estimate against the committed baselines (`reports/baselines/`), so that a
change which makes any method need more memory fails. CI runs it (`.ci/run` selects the `memory_gate` marker, which
the README's test command leaves out): SAM's 84 cells (about 2 minutes of CPU) and SAM 2.1's hiera_t (28 cells, every
method; about 40 s). Inside the test session it runs beside the other tests on its own worker, not
after them. Rewrite a baseline on purpose with `cadbench baseline update`."""

import importlib.util
from pathlib import Path

import pytest
from cadbench_in_process import cadbench_main

BASELINES = Path(__file__).parents[1] / "reports" / "baselines"
BASELINE = BASELINES / "estimate-default.json"
SAM2_BASELINE = BASELINES / "estimate-sam2.json"

pytestmark = pytest.mark.memory_gate


def test_the_default_grid_estimate_is_within_one_percent_of_the_committed_baseline(tmp_path):
    out = tmp_path / "estimate"
    # one process: the suite already runs a worker per core (the parallel path has its own test,
    # tests/test_launchers_estimates.py)
    # The baseline's grid, named: the default grid grows with optional extras (SAM 2.1's backbones with `sam2`).
    estimated = cadbench_main("estimate", "--backbone", "vit_b,vit_l,vit_h", "--out", out, "--no-progress", "--jobs",
                              "1")
    assert estimated.returncode == 0, estimated.stderr
    checked = cadbench_main("check", out, "--baseline", BASELINE, "--tolerance", "1%")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("OK: 84 cells within 1.0% of the baseline"), checked.stdout


@pytest.mark.skipif(importlib.util.find_spec("sam2") is None,
                    reason='the sam2 extra is not installed: SAM2_BUILD_CUDA=0 pip install --no-build-isolation '
                           '"cadbench[sam2]" (CI installs it and fails on this skip)')
def test_sam2_hiera_t_estimate_is_within_one_percent_of_its_committed_baseline(tmp_path):
    """Every method on SAM 2.1's smallest size, batch sizes 1-8: the Hiera paths (lora's and peft's branches, cad's
    adapter on the stride-16 level, sam_adapter's prompts before every block, full's encoder) without the cost of the
    four sizes."""
    out = tmp_path / "estimate"
    estimated = cadbench_main("estimate", "--backbone", "sam2.1_hiera_t", "--out", out, "--no-progress", "--jobs", "1")
    assert estimated.returncode == 0, estimated.stderr
    checked = cadbench_main("check", out, "--baseline", SAM2_BASELINE, "--tolerance", "1%")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("OK: 28 cells within 1.0% of the baseline"), checked.stdout
