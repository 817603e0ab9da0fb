"""The local launcher: each device cell in a fresh Python process on this machine, one after another; the run's
estimates before them, in this process or, full-size ones, on every core (launchers/estimates.py), never while a
device cell runs.
`run_in_fresh_process` is also what the other launchers run a cell with (pinned to a GPU, or inside a Slurm job), so
a cell's row is the same whichever launcher ran it."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from cadbench.harness.launchers.base import CellRun, Launcher, Progress
from cadbench.harness.launchers.config import LocalConfig
from cadbench.harness.launchers.estimates import estimate_in_order
from cadbench.harness.options import RunContext, RunOptions
from cadbench.harness.processes import default_jobs, run_cell_process
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.modes import Mode


class LocalLauncher(Launcher):
    NAME = "local"
    config_class = LocalConfig

    def launch(self, runs: list[CellRun], options: RunOptions, context: RunContext, environment: dict, out_dir: Path,
               on_progress: Progress) -> Iterator[tuple[Cell, dict]]:
        # Every estimate first, as one stretch: one set of processes (each starts in seconds) and their warm
        # replays serve them all, where estimates between device cells (the default grid's LiteMedSAM cells that
        # are estimated beside the ones that train on the CPU) would start a set per stretch; and the answers that
        # take seconds come before the cells that take minutes.
        estimates = [run for run in runs if run.mode == "estimate"]
        if estimates:
            yield from estimate_in_order(estimates, options, context, environment, on_progress,
                                         self.config.jobs or default_jobs())
        for run in runs:
            if run.mode != "estimate":
                on_progress("start", run.cell)
                yield run.cell, run_in_fresh_process(run.cell, run.mode, options, context, environment)


def run_in_fresh_process(cell: Cell, mode: Mode, options: RunOptions, context: RunContext, environment: dict | None,
                         extra_env: dict[str, str] | None = None,
                         on_start: Callable[[int], None] | None = None) -> dict:
    """Measure a cell in a new Python process: allocator state, fragmentation and crashes stay there.

    `environment` None: the cell's process collects its own (versions, GPU), as on a Slurm node. `extra_env` is
    added to the process's environment (e.g. CUDA_VISIBLE_DEVICES); `on_start` gets its process group's id. A cell
    whose steps run on the CPU gets glibc's malloc tunables (cadbench.measure.cpu_allocator), read at its start."""
    from cadbench.measure.cpu_allocator import cell_process_environment

    allocator = cell_process_environment() if mode == "cpu" else {}
    spec = json.dumps({"cell": cell.as_dict(), "mode": mode, "options": options.as_dict(),
                       "context": context.as_dict(), "environment": environment})
    with tempfile.TemporaryDirectory(prefix="cadbench-cell-") as folder:
        result_path = Path(folder) / "row.json"
        returncode, stderr = run_cell_process(
            [sys.executable, "-m", "cadbench.harness.measure_cell", spec, str(result_path)],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **allocator, **(extra_env or {})}, on_start=on_start)
        row = _read_row(result_path)
        if row is not None:
            return row
    last_line = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    return dead_cell_row(cell, environment or {}, f"cell process exited with code {returncode}: {last_line}".strip())


def dead_cell_row(cell: Cell, environment: dict, error: str, why: str | None = None) -> dict:
    """The error row of a cell whose process (or job) ended without writing one."""
    from cadbench.harness.results.rows import explain_nulls, identity_of, new_row, set_outcome

    row = new_row(identity_of(cell), environment)
    set_outcome(row, "error", error)
    return explain_nulls(row, {"*": why or f"cell process died ({error})"})


def _read_row(path: Path) -> dict | None:
    """The row a cell process wrote, or None when it wrote none or died writing it."""
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return row if isinstance(row, dict) and "status" in row else None
