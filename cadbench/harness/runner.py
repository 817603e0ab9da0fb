"""The sweep: every cell of the grid, each in a fresh process when it runs on a device, each row persisted the
moment it finishes, finished cells skipped on resume.

A stop (Ctrl-C, SIGTERM, any exception) kills the running cell's process group and removes its temporary folder
before it goes on up; the cell is then recorded nowhere, and a rerun with the same --out measures it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cadbench.harness.grid import Cell
from cadbench.harness.launchers.local import run_in_fresh_process
from cadbench.harness.measure_cell import measure_cell
from cadbench.harness.options import Mode, RunOptions
from cadbench.harness.results import ResultStore


@dataclass
class SweepOutcome:
    rows: list[dict]  # every cell of the grid, including the ones resumed from earlier runs
    ran: int  # cells measured by this invocation
    skipped: int  # cells already finished in --out

    @property
    def errored(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "error"]


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
        if mode == "estimate":
            row = measure_cell(cell, mode, options, environment)
        else:
            row = run_in_fresh_process(cell, mode, options, environment)
        store.append(row)
        on_progress("done", cell)
    wanted = {cell.key for cell in cells}
    rows = [row for row in store.rows() if store.key_of(row) in wanted]
    return SweepOutcome(rows=rows, ran=len(todo), skipped=len(cells) - len(todo))
