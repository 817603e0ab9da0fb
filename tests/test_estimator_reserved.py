"""Reserved memory and the OOM line: the simulated caching allocator over a step's whole allocation history."""

import json
import random

import pandas as pd
import pytest

from cadbench.estimator import AllocatorConfig, estimate_cell, estimate_setup
from cadbench.estimator.cuda_runtime import DEFAULT_CUDA_CONTEXT_BYTES
from cadbench.estimator.estimate import allocation_trace
from cadbench.estimator.replay import Replay
from cadbench.estimator.reserved import _OomSearch, resolution, search_line, simulate
from cadbench.training.setup import make_training_setup
from cadbench.vocabulary.cell import Cell

MiB = 1 << 20


def _trace(method: str = "cad", batch_size: int = 2):
    replay = Replay(lambda: make_training_setup(Cell(method, "test_scale", batch_size)))
    replay.warm_up(1)
    return allocation_trace(replay, replay.measure(1))


@pytest.mark.parametrize("alloc_conf", ["", "expandable_segments:True", "max_split_size_mb:20",
                                        "roundup_power2_divisions:4"])
def test_the_oom_line_completes_and_one_search_step_below_it_fails(alloc_conf):
    config = AllocatorConfig.parse(alloc_conf)
    trace = _trace()
    search = _OomSearch(trace, config)
    line = search.line()
    step = resolution(search.unlimited.reserved_bytes, config)
    assert search.completes(line)
    assert not search.completes(line - step)
    assert search.unlimited.peak_allocated_bytes <= line <= search.unlimited.reserved_bytes


@pytest.mark.parametrize("threshold", [0, 3, 40, 77, 99, 100])
def test_the_line_search_ends_on_a_budget_that_completes_with_the_one_below_failing(threshold):
    """Budgets are highest - k * step down to lowest, which need not fall on that grid (a regression: a search
    clamped to an off-grid lowest never ended)."""
    highest, lowest, step = 1000, 1000 - 100 * 7 - 3, 7
    tried = []

    def completes(budget: int) -> bool:
        tried.append(budget)
        return budget >= highest - threshold * step

    line = search_line(completes, highest, lowest, step)
    assert line == max(highest - threshold * step, highest - (highest - lowest) // step * step)
    assert (highest - line) % step == 0 and line >= lowest and (line - step < lowest or not completes(line - step))
    assert len(tried) <= 2 * 7 + 2


@pytest.mark.parametrize("failing_steps, line_steps", [({5, 6, 11}, 40), ({3, 12}, 2)])
def test_a_budget_failing_amid_successes_stops_the_search_only_if_tried(failing_steps, line_steps):
    """Success is not monotone in the budget: budgets the search does not try cannot move the line (k = 5, 6, 11
    are skipped by the steps 1, 3, 7, 15, 31), one it tries ends the doubling there (k = 3)."""
    def completes(budget: int) -> bool:
        k = (1000 - budget) // 7
        return k not in failing_steps and k <= 40

    line = search_line(completes, 1000, 0, 7)
    assert line == 1000 - 7 * line_steps and completes(line) and not completes(line - 7)


def _completes_from_the_start(trace, config: AllocatorConfig, budget: int) -> bool:
    """The whole trace run afresh with `budget`: no snapshot, no run reused."""
    from cadbench.estimator.caching_allocator import CachingAllocator, OutOfMemory

    allocator = CachingAllocator(config, budget)
    try:
        for ident, nbytes, stream in trace.events:
            allocator.malloc(ident, nbytes, stream) if nbytes else allocator.free(ident)
    except OutOfMemory:
        return False
    return True


def test_going_on_from_a_snapshot_equals_running_the_whole_trace_with_the_budget():
    """The search runs each budget from the last snapshot before the first request that budget refuses."""
    trace = _trace("sam_adapter")
    search = _OomSearch(trace, AllocatorConfig())
    for budget in range(search.unlimited.reserved_bytes - 64 * MiB, search.unlimited.reserved_bytes + 1, 2 * MiB):
        assert search.completes(budget) == _completes_from_the_start(trace, AllocatorConfig(), budget)


@pytest.mark.parametrize("alloc_conf", ["", "expandable_segments:True", "max_split_size_mb:20",
                                        "roundup_power2_divisions:4"])
def test_a_budget_within_a_simulated_run_s_granted_and_refused_totals_is_answered_as_its_own_run(alloc_conf):
    """A budget between the largest total a simulated run was granted and the smallest it was refused gets that
    run's outcome without a simulation of its own; each answer is checked against the whole trace run afresh with
    that budget, budgets from below the allocated peak to the peak reserved, in random order."""
    config = AllocatorConfig.parse(alloc_conf)
    trace = _trace("sam_adapter", batch_size=3)
    search = _OomSearch(trace, config)
    top, bottom = search.unlimited.reserved_bytes, search.unlimited.peak_allocated_bytes - 16 * MiB
    budgets = [*range(bottom, top, (top - bottom) // 97 or 1), top]
    random.Random(alloc_conf).shuffle(budgets)
    outcomes = [search.completes(budget) for budget in budgets]
    assert outcomes == [_completes_from_the_start(trace, config, budget) for budget in budgets]
    assert True in outcomes and False in outcomes
    assert search.probes < len(budgets) - 10  # many were answered from runs already simulated


@pytest.mark.parametrize("method", ["decoder_only", "sam_adapter", "cad"])
def test_on_default_grid_cells_reserved_exceeds_allocated_and_the_oom_line_lies_between(method):
    """The brief's invariant on a cheap part of the default grid (vit_b at batch sizes 1 and 2; the whole grid is in
    benchmarks/bench_estimator.py prints it)."""
    for batch_size in (1, 2):
        estimate = estimate_cell(Cell(method, "vit_b", batch_size), alloc_conf=AllocatorConfig())
        assert estimate.reserved_bytes >= estimate.peak_bytes
        assert estimate.peak_bytes <= estimate.allocator_budget_bytes <= estimate.reserved_bytes
        assert estimate.oom_capacity_bytes() == estimate.allocator_budget_bytes + DEFAULT_CUDA_CONTEXT_BYTES
        assert 1.0 <= estimate.fragmentation_ratio < 1.5


def test_reserved_memory_and_the_oom_line_reach_the_row():
    estimate = estimate_cell(Cell("cad", "test_scale", 2), alloc_conf=AllocatorConfig.parse("expandable_segments:True"))
    row = estimate.as_row_fields()
    assert row["reserved_memory_bytes"] == estimate.reserved_bytes > row["peak_memory_bytes"]
    assert row["oom_capacity_bytes"] == estimate.allocator_budget_bytes + DEFAULT_CUDA_CONTEXT_BYTES
    assert row["fragmentation_ratio"] == estimate.reserved_bytes / estimate.peak_bytes
    assert row["alloc_conf"] == "expandable_segments:True"
    assert any("not a measurement" in note and "cadbench validate" in note for note in estimate.notes)


def test_settings_the_simulation_does_not_model_give_no_figure_rather_than_a_wrong_one():
    config = AllocatorConfig.parse("backend:cudaMallocAsync")
    estimate = estimate_setup(lambda: make_training_setup(Cell("cad", "test_scale", 1)), alloc_conf=config)
    assert estimate.reserved_bytes is None and estimate.oom_capacity_bytes() is None
    assert estimate.fragmentation_ratio is None and estimate.peak_bytes > 0


def test_no_budget_is_tried_when_reserved_is_the_allocated_peak_rounded_to_the_allocator_granularity():
    """At test scale the cached segments hold nothing more than 2 MiB rounding: the peak reserved is the line."""
    result = simulate(_trace(), AllocatorConfig())
    assert result.segments > 0 and result.probes == 0
    assert result.oom_budget_bytes == result.reserved_bytes == -(-result.allocated_bytes // (2 * MiB)) * 2 * MiB


def test_estimated_rows_carry_reserved_memory_the_oom_line_and_the_settings(tmp_path):
    import cadbench

    frame = cadbench.run(methods=["cad"], backbones=["test_scale"], batch_sizes=[1], estimate_only=True,
                         out=tmp_path / "out", show_progress=False, print_summary=False,
                         alloc_conf="expandable_segments:True")
    row = frame.iloc[0]
    estimate = estimate_cell(Cell("cad", "test_scale", 1), alloc_conf=AllocatorConfig.parse("expandable_segments:True"))
    assert row["alloc_conf"] == "expandable_segments:True" and row["memory_source"] == "estimated"
    assert row["reserved_memory_bytes"] == estimate.reserved_bytes >= row["peak_memory_bytes"]
    assert row["oom_capacity_bytes"] == estimate.oom_capacity_bytes()
    assert row["fragmentation_ratio"] == pytest.approx(estimate.fragmentation_ratio)
    unmodelled = cadbench.run(methods=["cad"], backbones=["test_scale"], batch_sizes=[1], estimate_only=True,
                              out=tmp_path / "other", show_progress=False, print_summary=False,
                              alloc_conf="per_process_memory_fraction:0.5").iloc[0]
    reasons = json.loads(unmodelled["null_reasons"])
    assert unmodelled["status"] == "ok" and pd.isna(unmodelled["reserved_memory_bytes"])
    assert "per_process_memory_fraction is not simulated" in reasons["oom_capacity_bytes"]


def test_a_garbage_collection_threshold_alone_is_estimated_as_the_defaults_and_says_why():
    cell = Cell("cad", "test_scale", 1)
    threshold = estimate_cell(cell, alloc_conf=AllocatorConfig.parse("garbage_collection_threshold:0.6"))
    default = estimate_cell(cell, alloc_conf=AllocatorConfig())
    assert threshold.allocator == default.allocator is not None
    assert threshold.oom_capacity_bytes() == default.oom_capacity_bytes()
    assert threshold.as_row_fields()["alloc_conf"] == "garbage_collection_threshold:0.6"
    assert not threshold.null_reasons() and any("changes nothing" in note for note in threshold.notes)
