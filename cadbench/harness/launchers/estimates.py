"""Estimate cells, on several cores when there are several: the cells that share a warm replay (one method, backbone,
precision and set of structural levers: `estimator.cells.replay_group`) go to one process, as `fit --jobs` sends
each method x backbone search to one, and the rows come back in the order of the cells given.

Each row is what `measure_cell` makes of its cell in this process: the estimate of a cell does not depend on which
cells its process estimated before (tests check that reused replays and cached op answers equal fresh ones, and a
test compares a parallel run's rows with a sequential run's). With one job, or fewer than two groups of full-size
models (a process starts in about 5 s of CPU, imports included; a test-scale cell estimates in well under one), nothing
is spawned: the cells are estimated here, one after the other, as before.
"""

from __future__ import annotations

from functools import partial
from typing import Iterator

from cadbench.harness.launchers.base import CellRun, Progress, measure_here
from cadbench.harness.options import RunContext, RunOptions
from cadbench.vocabulary.cell import Cell


def estimate_in_order(runs: list[CellRun], options: RunOptions, context: RunContext, environment: dict,
                      on_progress: Progress, jobs: int) -> Iterator[tuple[Cell, dict]]:
    """Yield `(cell, row)` for every estimate run, in the order of `runs`, using up to `jobs` processes."""
    from cadbench.estimator.cells import replay_group

    groups: dict[Cell, list[int]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(replay_group(run.cell), []).append(index)
    if jobs <= 1 or sum(not _test_scale(group) for group in groups) < 2:
        for run in runs:
            on_progress("start", run.cell)
            yield run.cell, measure_here(run, options, context, environment)
        return
    import multiprocessing

    # groups in the order of their first cell, so that rows reach the journal (and survive a stop) as early as the
    # order allows; with many groups per core, the last to start is rarely the longest
    order = list(groups.values())
    rows: dict[int, dict] = {}
    following = 0  # the next run to yield
    work = partial(_estimate_group, options=options, context=context, environment=environment)
    pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(groups)), initializer=_ignore_interrupts)
    try:
        for indices, group_rows in pool.imap_unordered(work, [(indices, [runs[i] for i in indices])
                                                              for indices in order]):
            rows.update(zip(indices, group_rows))
            while following in rows:
                on_progress("start", runs[following].cell)
                yield runs[following].cell, rows.pop(following)
                following += 1
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _estimate_group(item: tuple[list[int], list[CellRun]], options: RunOptions, context: RunContext,
                    environment: dict) -> tuple[list[int], list[dict]]:
    indices, runs = item
    return indices, [measure_here(run, options, context, environment) for run in runs]


def _test_scale(cell: Cell) -> bool:
    """A test-scale model estimates in a fraction of a second: less than a process takes to start."""
    from cadbench.backbones import get_backbone

    return get_backbone(cell.backbone).test_scale


def _ignore_interrupts() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
