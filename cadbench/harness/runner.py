"""The sweep: every cell of the grid, each in a fresh process when it runs on a device, each row persisted the
moment it finishes, finished cells skipped on resume.

A stop (Ctrl-C, SIGTERM, any exception) kills the running cell's process group and removes its temporary folder
before it goes on up; the cell is then recorded nowhere, and a rerun with the same --out measures it again."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cadbench.harness.grid import Cell
from cadbench.harness.measure_cell import measure_cell
from cadbench.harness.options import Mode, RunOptions
from cadbench.harness.processes import run_cell_process
from cadbench.harness.results import ResultStore, explain_nulls, new_row
from cadbench.backbones import get_backbone


@dataclass
class SweepOutcome:
    rows: list[dict]  # every cell of the grid, including the ones resumed from earlier runs
    ran: int  # cells measured by this invocation
    skipped: int  # cells already finished in --out

    @property
    def errored(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "error"]


def run_in_fresh_process(cell: Cell, mode: Mode, options: RunOptions, environment: dict) -> dict:
    """Measure a cell in a new Python process: allocator state, fragmentation and crashes stay there."""
    spec = json.dumps({"cell": cell.as_dict(), "mode": mode, "options": options.as_dict(),
                       "environment": environment})
    with tempfile.TemporaryDirectory(prefix="cadbench-cell-") as folder:
        result_path = Path(folder) / "row.json"
        returncode, stderr = run_cell_process(
            [sys.executable, "-m", "cadbench.harness.measure_cell", spec, str(result_path)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        row = _read_row(result_path)
        if row is not None:
            return row
    last_line = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    row = new_row({**cell.as_dict(), "test_scale": get_backbone(cell.backbone).test_scale}, environment)
    row.update(status="error", error=f"cell process exited with code {returncode}: {last_line}".strip())
    why = f"cell process died ({row['error']})"
    return explain_nulls(row, {"*": why})


def _read_row(path: Path) -> dict | None:
    """The row a cell process wrote, or None when it wrote none or died writing it."""
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return row if isinstance(row, dict) and "status" in row else None


def _lever_not_applicable(cell: Cell) -> bool:
    from cadbench.training.levers import not_applicable

    return not_applicable(cell) is not None


def sweep(
    cells: list[Cell],
    mode_of: Callable[[Cell], Mode],
    options: RunOptions,
    store: ResultStore,
    environment: dict,
    on_progress: Callable[[str, Cell | None], None] = lambda event, cell: None,
) -> SweepOutcome:
    """Measure every unfinished cell and persist each row as it finishes.

    Cells that run real steps get a fresh process each; estimates (no device state to isolate, and the estimator
    reuses work across cells) run in this process.
    """
    finished = store.finished_keys()
    todo = [cell for cell in cells if cell.key not in finished]
    for cell in cells:
        if cell.key in finished:
            on_progress("skipped", cell)
    for cell in todo:
        on_progress("start", cell)
        mode = mode_of(cell)
        if mode == "estimate" or _lever_not_applicable(cell):  # a not_applicable row needs no device process
            row = measure_cell(cell, mode, options, environment)
        else:
            row = run_in_fresh_process(cell, mode, options, environment)
        store.append(row)
        on_progress("done", cell)
    wanted = {cell.key for cell in cells}
    rows = [row for row in store.rows() if store.key_of(row) in wanted]
    return SweepOutcome(rows=rows, ran=len(todo), skipped=len(cells) - len(todo))
