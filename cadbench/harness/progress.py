"""A progress bar over cells (rich), with ETA and the name of the cell being measured."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cadbench.harness.grid import Cell


class SweepProgress:
    def __init__(self, total: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(file=sys.stderr), disable=not enabled, transient=False,
        )
        self._task = self._progress.add_task("cells", total=total)

    def __enter__(self) -> "SweepProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.update(self._task, description="done")
        self._progress.stop()

    def update(self, event: str, cell: Cell | None) -> None:
        if event == "start" and cell is not None:
            self._progress.update(self._task, description=cell.label)
        elif event == "done":
            self._progress.advance(self._task)
        elif event == "skipped":  # finished in an earlier run: out of the count, so the ETA stays honest
            total = self._progress.tasks[0].total or 0
            self._progress.update(self._task, total=max(total - 1, 0))
