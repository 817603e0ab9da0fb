"""Progress over cells. On a terminal: a bar (rich), with ETA and the name of the cell being measured; where cells
run side by side (one per GPU, or as Slurm jobs), one line per running cell saying where it runs or its job's state.
Off a terminal (CI logs, nohup, `| tee`), where a bar draws nothing until the end: one plain line per finished cell
(`PlainProgress`)."""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from typing import Mapping, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from cadbench.harness.grid import cell_label
from cadbench.vocabulary.cell import Cell

# How the cells of a mode are named where the ETA cannot time them yet.
_NOT_YET_TIMED = {"estimate": "to estimate", "cpu": "on the CPU", "cuda": "on CUDA"}


class CellPace:
    """The time left, from each kind of cell's own pace. A cell's kind is its mode (estimated, run on the CPU, on
    CUDA): estimates take seconds and cells that train take minutes, so one pace for all would promise seconds while
    the slow ones are still to come. A kind's pace is the mean time between one cell's finish and the finish before
    it, over that kind's last RECENT cells: cells estimated side by side finish at their combined pace, and their
    rows come back in order, in bursts, so the window is long enough to span a burst. A kind none of whose cells has
    finished has no pace yet: the ETA counts those cells instead of guessing. `not_applicable` rows, written at
    once, time nothing."""

    RECENT = 20

    def __init__(self, total: int, modes: Mapping[str, str] | None = None, started: float = 0.0) -> None:
        self.modes = dict(modes or {})  # cell key -> mode; a cell not in it is of the kind "cell"
        self.left = Counter(self.modes.values())
        self.left["cell"] = max(total - len(self.modes), 0)
        self.intervals: dict[str, list[float]] = defaultdict(list)
        self.last = started

    def start(self, now: float) -> None:
        self.last = now

    def _kind(self, cell: Cell | None) -> str:
        return self.modes.get(cell.key, "cell") if cell is not None else "cell"

    def skipped(self, cell: Cell | None) -> None:
        kind = self._kind(cell)
        self.left[kind] = max(self.left[kind] - 1, 0)

    def finished(self, cell: Cell | None, row: dict | None, now: float) -> None:
        kind = self._kind(cell)
        self.left[kind] = max(self.left[kind] - 1, 0)
        if not (row and row.get("status") == "not_applicable"):
            self.intervals[kind] = (self.intervals[kind] + [now - self.last])[-self.RECENT:]
        self.last = now

    def eta(self) -> str:
        """'ETA 1 min 20 s', 'ETA 12 s + 3 cells on the CPU not yet timed', or '' when nothing is left."""
        seconds, untimed = 0.0, []
        for kind, count in self.left.items():
            if count <= 0:
                continue
            if self.intervals[kind]:
                seconds += count * sum(self.intervals[kind]) / len(self.intervals[kind])
            else:
                untimed.append(f"{count} cell{'s' if count > 1 else ''} {_NOT_YET_TIMED.get(kind, 'more')}")
        if not untimed:
            return f"ETA {duration_text(seconds)}" if any(count > 0 for count in self.left.values()) else ""
        later = " + ".join(untimed) + " not yet timed"
        return f"ETA {duration_text(seconds)} + {later}" if seconds else f"ETA unknown: {later}"


class _Eta(ProgressColumn):
    """The bar's ETA, from `CellPace`."""

    def __init__(self, pace: CellPace) -> None:
        super().__init__()
        self._pace = pace

    def render(self, task):
        return Text(self._pace.eta() or "")


class _BarOnly(ProgressColumn):
    """A column shown on the bar's line only; a running cell's line is its text alone."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self._column = column

    def render(self, task):
        return Text("") if task.fields.get("cell_line") else self._column.render(task)


class SweepProgress:
    def __init__(self, total: int, enabled: bool = True, modes: Mapping[str, str] | None = None,
                 clock=time.monotonic) -> None:
        self.enabled = enabled
        self._clock = clock
        self._pace = CellPace(total, modes, clock())
        self._progress = Progress(
            TextColumn("{task.description}"), *map(_BarOnly, (BarColumn(), MofNCompleteColumn(),
                                                               TimeElapsedColumn(), _Eta(self._pace))),
            console=Console(file=sys.stderr), disable=not enabled, transient=False,
        )
        self._task = self._progress.add_task("cells", total=total)
        self._lines: dict[str, int] = {}  # cell key -> its line (cells with a place or a job state)

    def __enter__(self) -> "SweepProgress":
        self._pace.start(self._clock())
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.update(self._task, description="done")
        for line in self._lines.values():
            self._progress.remove_task(line)
        self._lines.clear()
        self._progress.stop()

    def update(self, event: str, cell: Cell | None, detail: str | None = None, row: dict | None = None) -> None:
        if event == "start" and cell is not None:
            if detail is None:  # one cell at a time: the bar names it
                self._progress.update(self._task, description=cell_label(cell))
            else:  # side by side: each running cell has its own line
                self._progress.update(self._task, description="cells")
                self._show(cell, detail)
        elif event == "state" and cell is not None and detail is not None:
            self._show(cell, detail)
        elif event == "done":
            self._pace.finished(cell, row, self._clock())
            self._progress.advance(self._task)
            if cell is not None and cell.key in self._lines:
                self._progress.remove_task(self._lines.pop(cell.key))
        elif event == "skipped":  # finished in an earlier run: out of the count, so the ETA stays honest
            self._pace.skipped(cell)
            total = self._progress.tasks[0].total or 0
            self._progress.update(self._task, total=max(total - 1, 0))

    def _show(self, cell: Cell, detail: str) -> None:
        text = f"  {detail} · {cell_label(cell)}"
        if cell.key in self._lines:
            self._progress.update(self._lines[cell.key], description=text)
        else:
            self._lines[cell.key] = self._progress.add_task(text, total=None, start=False,
                                                             cell_line=True)


class PlainProgress:
    """One line per finished cell on `stream` (default: stdout), flushed at once: its place in the count, key,
    status, peak memory (and where it came from), throughput, and the ETA (`CellPace`: each kind of cell at its own
    pace). Where cells run side by side, a line also says where each one starts and when a Slurm job changes state.
    Cells finished in an earlier run are left out of the count, as on the bar."""

    def __init__(self, total: int, stream: TextIO | None = None, clock=time.monotonic,
                 modes: Mapping[str, str] | None = None) -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self._pace = CellPace(total, modes, self._started)

    def __enter__(self) -> "PlainProgress":
        self._started = self._clock()
        self._pace.start(self._started)
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, event: str, cell: Cell | None, detail: str | None = None, row: dict | None = None) -> None:
        if event == "skipped":
            self.total = max(self.total - 1, 0)
            self._pace.skipped(cell)
        elif event in ("start", "state") and cell is not None and detail is not None:
            self._print(f"{cell.key}: {detail}")
        elif event == "done" and cell is not None:
            self.done += 1
            self._pace.finished(cell, row, self._clock())
            self._print(f"[{self.done}/{self.total}] {cell.key}: {finished_cell_summary(row)}; {self._eta()}")

    def _eta(self) -> str:
        if self.total - self.done <= 0:
            return f"all done in {duration_text(self._clock() - self._started)}"
        return self._pace.eta()

    def _print(self, line: str) -> None:
        print(line, file=self._stream or sys.stdout, flush=True)


def finished_cell_summary(row: dict | None) -> str:
    """'ok, peak 5.21 GB (estimated), 3.20 img/s (cpu)', 'oom', or 'error: <message>' (a row's fields that a log
    reader needs, no more)."""
    if row is None:
        return "finished"
    status = row.get("status")
    if status == "error":
        return f"error: {row.get('error')}"
    parts = [str(status)]
    if row.get("peak_memory_bytes") is not None:
        parts.append(f"peak {row['peak_memory_bytes'] / 1e9:.2f} GB ({row.get('memory_source')})")
    if row.get("throughput_img_s") is not None:
        parts.append(f"{row['throughput_img_s']:.2f} img/s ({row.get('throughput_source')})"
                     + (", noisy" if row.get("step_time_noisy") else ""))
    return ", ".join(parts)


def duration_text(seconds: float) -> str:
    if 0 < seconds < 0.5:
        return "under 1 s"  # not "0 s" for cells still to come
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def sweep_progress(total: int, enabled: bool = True,
                   modes: Mapping[str, str] | None = None) -> SweepProgress | PlainProgress:
    """The bar where both stdout and stderr are a terminal; else plain lines on stdout (with the summary, so that a
    log of stdout has both). `enabled` False (--no-progress): neither. `modes`: each cell's mode by its key, which
    the ETA times separately."""
    if enabled and not (sys.stdout.isatty() and sys.stderr.isatty()):
        return PlainProgress(total, modes=modes)
    return SweepProgress(total, enabled=enabled, modes=modes)
