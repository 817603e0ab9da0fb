"""What every launcher shares: the cell runs it is given, the interface it implements, and the columns of a row that
say where its cell ran (`gpu_index`, `slurm_job_id`, `slurm_state`, `slurm_log`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from cadbench.errors import CadbenchError, summarize_names
from cadbench.harness.options import RunContext, RunOptions
from cadbench.vocabulary.cell import Cell

# on_progress(event, cell, detail=None, row=None): "skipped" | "start" | "state" (detail: where it runs, a job's
from cadbench.vocabulary.modes import Mode

# state) | "done" (row: the cell's row, from the sweep)
Progress = Callable[..., None]
LAUNCHER_COLUMNS = ("gpu_index", "slurm_job_id", "slurm_state", "slurm_log")


@dataclass(frozen=True)
class CellRun:
    """One unfinished cell and how it is measured (chosen by the sweep, never by the launcher)."""

    cell: Cell
    mode: Mode


class Launcher(ABC):
    """Runs cells somewhere and yields `(cell, row)` as each finishes; never writes `--out`'s result files."""

    NAME: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config
        self.in_flight: list[str] = []  # what is still running elsewhere when `launch` returns (detached jobs)

    def check(self) -> None:
        """Refuse, in one CadbenchError, what would fail before anything runs (nothing by default)."""

    def cuda_where_cells_run(self) -> bool | None:
        """Whether the processes that measure device cells have CUDA; None: as this process (torch decides)."""
        return None

    def check_folder(self, out_dir: Path, runs: list[CellRun]) -> None:
        """Refuse to measure here cells that Slurm jobs recorded in `out_dir` may still be measuring."""
        from cadbench.harness.launchers.slurm.state import JobRecords

        keys = {run.cell.key for run in runs}
        recorded = [job for job in JobRecords.read(out_dir).jobs if job.key in keys]
        if recorded:
            ids = summarize_names([job.job_id for job in recorded])
            raise CadbenchError(
                f"--out {out_dir} has Slurm jobs that may still be measuring {len(recorded)} of these cells ({ids}); "
                f"resume with --launcher slurm to collect them, or delete {JobRecords.path(out_dir)} to measure "
                f"them here anyway")

    @abstractmethod
    def launch(self, runs: list[CellRun], options: RunOptions, context: RunContext, environment: dict, out_dir: Path,
               on_progress: Progress) -> Iterator[tuple[Cell, dict]]:
        """Run `runs` and yield each `(cell, row)` as it finishes, in any order. Stopping the iteration early (an
        exception in the caller, Ctrl-C) must leave nothing of this launcher's running on this machine."""

    def summary_lines(self) -> list[str]:
        """Lines for the end of the run (e.g. the ids of jobs left running)."""
        return []


def measure_here(run: CellRun, options: RunOptions, context: RunContext, environment: dict) -> dict:
    """A cell measured in this process: estimates, which have no device state to isolate (and reuse the
    estimator's work across cells)."""
    from cadbench.harness.measure_cell import measure_cell

    return measure_cell(run.cell, run.mode, options, environment, context)


def set_columns(row: dict, **values: Any) -> dict:
    """Fill columns of `row` (a launcher's own, or the environment's), dropping the null reason a value replaces."""
    for column, value in values.items():
        row[column] = value
        if value is not None:
            row.get("null_reasons", {}).pop(column, None)
    return row


__all__ = ["CellRun", "LAUNCHER_COLUMNS", "Launcher", "Progress", "measure_here", "set_columns"]
