"""The memory gate: the default grid's estimate against the committed baseline (`reports/baselines/`), so that a
change which makes any method need more memory fails. CI runs it (`.ci/run` selects the `memory_gate` marker, which
the README's test command leaves out: it replays all 84 cells of the default grid, about 4 minutes of CPU). Inside
the test session it runs beside the other tests on its own worker, not after them. Rewrite the baseline on purpose
with `cadbench baseline update`."""

from pathlib import Path

import pytest
from cadbench_in_process import cadbench_main

BASELINE = Path(__file__).parents[1] / "reports" / "baselines" / "estimate-default.json"

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
