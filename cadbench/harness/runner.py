"""The sweep: every unfinished cell of the grid, run where its launcher puts it (see `harness.launchers`), each row
persisted by this process the moment the launcher hands it back, finished cells skipped on resume.

A stop (Ctrl-C, SIGTERM, any exception) kills the cell processes running on this machine and removes their
temporary folders before it goes on up; those cells are then recorded nowhere, and a rerun with the same --out
measures them again. (Slurm jobs already submitted keep running; the rerun collects them.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from cadbench.harness.launchers import launcher_for
from cadbench.harness.launchers.base import CellRun, Launcher, Progress
from cadbench.harness.measure_cell import not_applicable_row
from cadbench.harness.options import RunContext, RunOptions
from cadbench.harness.results.store import ResultStore
from cadbench.training.levers import not_applicable
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.modes import Mode


@dataclass
class SweepOutcome:
    rows: list[dict]  # every cell of the grid, including the ones resumed from earlier runs
    ran: int  # cells measured by this invocation
    skipped: int  # cells already finished in --out
    in_flight: list[str] = field(default_factory=list)  # left running elsewhere (detached Slurm jobs)
    notes: list[str] = field(default_factory=list)  # the launcher's closing lines
    ran_cells: list[Cell] = field(default_factory=list)  # the cells this invocation measured, as they finished

    @property
    def errored(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "error"]


def sweep(
    cells: list[Cell],
    mode_of: Callable[[Cell], Mode],
    options: RunOptions,
    context: RunContext,
    store: ResultStore,
    environment: dict,
    on_progress: Progress = lambda event, cell, detail=None: None,
    launcher: Launcher | None = None,
) -> SweepOutcome:
    """Measure every unfinished cell through `launcher` (default: the local one) and persist each row as it
    finishes, in whatever order. This process is the only writer of the store; launchers only return rows.

    On the local launcher, cells that run real steps get a fresh process each; estimates (no device state to
    isolate, and the estimator reuses work across cells) run in this process.
    """
    launcher = launcher or launcher_for("local")
    finished = store.finished_keys()
    todo = [cell for cell in cells if cell.key not in finished]
    for cell in cells:
        if cell.key in finished:
            on_progress("skipped", cell)
    runs = [CellRun(cell, mode_of(cell)) for cell in todo]
    ran: list[Cell] = []
    reasons = {run.cell: not_applicable(run.cell) for run in runs}  # decided here, once per cell
    for run in [run for run in runs if reasons[run.cell]]:  # a row saying why; no device, no job
        on_progress("start", run.cell)
        row = not_applicable_row(run.cell, reasons[run.cell], run.mode, options, context, environment)
        store.append(row)
        ran.append(run.cell)
        on_progress("done", run.cell, row=row)
    runs = [run for run in runs if not reasons[run.cell]]
    launcher.check_folder(store.out_dir, runs)
    finishing = launcher.launch(runs, options, context, environment, store.out_dir, on_progress)
    try:
        for cell, row in finishing:
            store.append(row)
            ran.append(cell)
            on_progress("done", cell, row=row)
    finally:
        finishing.close()  # on a stop, the launcher's clean-up runs now, before the exception goes on
    wanted = {cell.key for cell in cells}
    rows = [row for row in store.rows() if store.key_of(row) in wanted]
    return SweepOutcome(rows=rows, ran=len(ran), ran_cells=ran, skipped=len(cells) - len(todo),
                        in_flight=list(launcher.in_flight), notes=launcher.summary_lines())
