"""A progress bar over cells (rich), with ETA and the name of the cell being measured; where cells run side by side
(one per GPU, or as Slurm jobs), one line per running cell saying where it runs or its job's state."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from cadbench.harness.grid import Cell


class _BarOnly(ProgressColumn):
    """A column shown on the bar's line only; a running cell's line is its text alone."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self._column = column

    def render(self, task):
        return Text("") if task.fields.get("cell_line") else self._column.render(task)


class SweepProgress:
    def __init__(self, total: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"), *map(_BarOnly, (BarColumn(), MofNCompleteColumn(),
                                                               TimeElapsedColumn(), TextColumn("ETA"),
                                                               TimeRemainingColumn())),
            console=Console(file=sys.stderr), disable=not enabled, transient=False,
        )
        self._task = self._progress.add_task("cells", total=total)
        self._lines: dict[str, int] = {}  # cell key -> its line (cells with a place or a job state)

    def __enter__(self) -> "SweepProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.update(self._task, description="done")
        for line in self._lines.values():
            self._progress.remove_task(line)
        self._lines.clear()
        self._progress.stop()

    def update(self, event: str, cell: Cell | None, detail: str | None = None) -> None:
        if event == "start" and cell is not None:
            if detail is None:  # one cell at a time: the bar names it
                self._progress.update(self._task, description=cell.label)
            else:  # side by side: each running cell has its own line
                self._progress.update(self._task, description="cells")
                self._show(cell, detail)
        elif event == "state" and cell is not None and detail is not None:
            self._show(cell, detail)
        elif event == "done":
            self._progress.advance(self._task)
            if cell is not None and cell.key in self._lines:
                self._progress.remove_task(self._lines.pop(cell.key))
        elif event == "skipped":  # finished in an earlier run: out of the count, so the ETA stays honest
            total = self._progress.tasks[0].total or 0
            self._progress.update(self._task, total=max(total - 1, 0))

    def _show(self, cell: Cell, detail: str) -> None:
        text = f"  {detail} · {cell.label}"
        if cell.key in self._lines:
            self._progress.update(self._lines[cell.key], description=text)
        else:
            self._lines[cell.key] = self._progress.add_task(text, total=None, start=False,
                                                             cell_line=True)
