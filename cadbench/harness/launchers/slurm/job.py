"""What a Slurm job runs: one cell, in a fresh process on the job's node, exactly as the local launcher runs it, so a
row is the same whichever launcher produced it. Light to import (the job's own process only waits for the cell's)."""

from __future__ import annotations

from cadbench.harness.options import RunContext, RunOptions
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.modes import Mode


def run_cell_job(cell: Cell, mode: Mode, options: RunOptions, context: RunContext) -> dict:
    """The cell's row; the cell's process describes the node it runs on (versions, GPU)."""
    from cadbench.harness.launchers.local import run_in_fresh_process

    return run_in_fresh_process(cell, mode, options, context, environment=None)
