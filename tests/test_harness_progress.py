"""Progress: the bar on a terminal, one plain line per finished cell in a log."""

from __future__ import annotations

import io

from cadbench_in_process import cadbench_main

from cadbench.harness import progress as progress_module
from cadbench.harness.progress import PlainProgress, SweepProgress, sweep_progress
from cadbench.vocabulary.cell import Cell


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_finished_cell_is_one_line_with_its_count_key_status_peak_and_eta():
    stream, clock = io.StringIO(), FakeClock()
    cells = [Cell("cad", "vit_b", 1), Cell("cad", "vit_b", 2), Cell("sam_adapter", "vit_b", 1),
             Cell("sam_adapter", "vit_b", 2)]
    with PlainProgress(len(cells), stream=stream, clock=clock) as progress:
        progress.update("skipped", cells[0])  # finished in an earlier run: out of the count
        clock.now += 30
        progress.update("start", cells[1])
        progress.update("done", cells[1], row={"status": "ok", "peak_memory_bytes": 5_210_000_000,
                                               "memory_source": "estimated"})
        clock.now += 30
        progress.update("done", cells[2], row={"status": "ok", "peak_memory_bytes": 1e9, "memory_source": "estimated",
                                               "throughput_img_s": 3.2, "throughput_source": "cpu",
                                               "step_time_noisy": True})
        clock.now += 30
        progress.update("done", cells[3], row={"status": "error", "error": "RuntimeError: boom"})
    assert stream.getvalue().splitlines() == [
        "[1/3] cad/vit_b/2/fp32: ok, peak 5.21 GB (estimated); ETA 1 min 00 s",
        "[2/3] sam_adapter/vit_b/1/fp32: ok, peak 1.00 GB (estimated), 3.20 img/s (cpu), noisy; ETA 30 s",
        "[3/3] sam_adapter/vit_b/2/fp32: error: RuntimeError: boom; all done in 1 min 30 s",
    ]


def test_cells_running_side_by_side_say_where_they_start_and_when_a_job_changes_state():
    stream = io.StringIO()
    cell = Cell("cad", "vit_b", 4)
    with PlainProgress(1, stream=stream, clock=FakeClock()) as progress:
        progress.update("start", cell, "job 17 PENDING")
        progress.update("state", cell, "job 17 RUNNING")
        progress.update("done", cell, row={"status": "oom"})
    assert stream.getvalue().splitlines() == ["cad/vit_b/4/fp32: job 17 PENDING", "cad/vit_b/4/fp32: job 17 RUNNING",
                                              "[1/1] cad/vit_b/4/fp32: oom; all done in 0 s"]


class Tty(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_bar_is_kept_on_a_terminal_and_plain_lines_are_used_when_stdout_is_not_one(monkeypatch):
    monkeypatch.setattr(progress_module.sys, "stderr", Tty(True))
    monkeypatch.setattr(progress_module.sys, "stdout", Tty(True))
    assert isinstance(sweep_progress(3), SweepProgress)
    monkeypatch.setattr(progress_module.sys, "stdout", Tty(False))  # `| tee`, nohup, a CI log
    assert isinstance(sweep_progress(3), PlainProgress)
    quiet = sweep_progress(3, enabled=False)  # --no-progress: neither
    assert isinstance(quiet, SweepProgress) and not quiet.enabled


def test_a_run_whose_output_goes_to_a_pipe_prints_a_line_per_cell_as_it_finishes(tmp_path):
    result = cadbench_main("estimate", "--methods", "cad", "--backbone", "test_scale", "--batch-sizes", "1,2",
                           "--out", tmp_path / "out")  # stdout is not a terminal here either
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in lines] == ["[1/2] cad/test_scale/1/fp32", "[2/2] cad/test_scale/2/fp32"]
    assert all(" ok, peak " in line and "(estimated)" in line for line in lines)
    assert "ETA" in lines[0] and "all done in" in lines[1]


def test_the_eta_spans_a_burst_of_rows_from_cells_estimated_side_by_side():
    """Side by side, rows come back in order: a slow cell holds back the ones finished behind it, which then arrive
    together. The pace is the mean over a window longer than such a burst, not over its last few rows."""
    stream, clock = io.StringIO(), FakeClock()
    cells = [Cell("cad", "vit_b", batch) for batch in range(1, 13)]
    with PlainProgress(len(cells), stream=stream, clock=clock, modes={cell.key: "estimate" for cell in cells}) as p:
        clock.now += 10  # ten cells of a second each, delivered at once
        for cell in cells[:10]:
            p.update("done", cell, row={"status": "ok"})
    assert stream.getvalue().splitlines()[-1].endswith("ETA 2 s")  # two cells left, at a second a cell


def test_each_kind_of_cell_has_its_own_pace_and_cells_of_a_kind_not_yet_timed_are_counted_not_guessed():
    """An estimate takes a second, a cell that trains on the CPU a minute: while estimates finish, the ETA must not
    promise seconds for the CPU cells still to come (a plain run once said "ETA 1 s" with three of them left)."""
    stream, clock = io.StringIO(), FakeClock()
    cells = [Cell("cad", "vit_b", batch) for batch in (1, 2, 4)] + [Cell("cad", "litemedsam", 1),
                                                                   Cell("decoder_only", "litemedsam", 1)]
    blocked = Cell("sam_adapter", "litemedsam", 1)
    modes = {cell.key: "estimate" for cell in cells[:3]} | {cell.key: "cpu" for cell in [*cells[3:], blocked]}
    with PlainProgress(len(cells) + 1, stream=stream, clock=clock, modes=modes) as progress:
        progress.update("done", blocked, row={"status": "not_applicable"})  # written at once: times nothing
        for cell in cells[:3]:
            clock.now += 1
            progress.update("done", cell, row={"status": "ok"})
        clock.now += 60
        progress.update("done", cells[3], row={"status": "ok"})
        clock.now += 60
        progress.update("done", cells[4], row={"status": "ok"})
    etas = [line.split("; ")[-1] for line in stream.getvalue().splitlines()]
    assert etas == ["ETA unknown: 3 cells to estimate + 2 cells on the CPU not yet timed",
                    "ETA 2 s + 2 cells on the CPU not yet timed",
                    "ETA 1 s + 2 cells on the CPU not yet timed",
                    "ETA unknown: 2 cells on the CPU not yet timed",
                    "ETA 1 min 00 s",
                    "all done in 2 min 03 s"]


def test_the_bar_shows_the_same_eta_by_kind(monkeypatch):
    clock = FakeClock()
    cells = [Cell("cad", "vit_b", 1), Cell("cad", "litemedsam", 1)]
    bar = SweepProgress(2, enabled=False, modes={cells[0].key: "estimate", cells[1].key: "cpu"}, clock=clock)
    with bar:
        clock.now += 2
        bar.update("done", cells[0], row={"status": "ok"})
        column = bar._progress.columns[-1]._column  # the ETA column (shown on the bar's line only)
        assert str(column.render(bar._progress.tasks[0])) == "ETA unknown: 1 cell on the CPU not yet timed"


def test_a_pace_under_a_second_reads_under_1_s_not_0_s():
    stream, clock = io.StringIO(), FakeClock()
    cells = [Cell("cad", "vit_b", batch) for batch in (1, 2, 4)] + [Cell("cad", "litemedsam", 1)]
    modes = {cell.key: "estimate" for cell in cells[:3]} | {cells[3].key: "cpu"}
    with PlainProgress(len(cells), stream=stream, clock=clock, modes=modes) as progress:
        for cell in cells[:2]:
            clock.now += 0.1
            progress.update("done", cell, row={"status": "ok"})
    assert stream.getvalue().splitlines()[-1].endswith("ETA under 1 s + 1 cell on the CPU not yet timed")
