"""A cell timed on the CPU: a noisy timing is timed once more, the steadier one kept, and the row says so."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cadbench.harness import measure_cell as measure_cell_module
from cadbench.harness.measure_cell import measure_cell
from cadbench.harness.options import RunOptions
from cadbench.harness.results.rows import unexplained_nulls
from cadbench.measure import timing
from cadbench.measure.timing import StepTimes
from cadbench.vocabulary.cell import Cell

NOISY = StepTimes([0.15] * 8 + [3.2, 3.4])
STEADY = StepTimes([0.15, 0.16, 0.15, 0.17, 0.15, 0.16, 0.18, 0.15, 0.16, 0.2])
ENVIRONMENT = {"torch_version": "test", "cadbench_version": "test"}


def _measure(monkeypatch, timings: list[StepTimes]) -> tuple[dict, list[tuple[int, int]]]:
    calls = []

    def fake_time_cpu_steps(step, warmup, steps):
        calls.append((warmup, steps))
        return timings[len(calls) - 1]

    monkeypatch.setattr(timing, "time_cpu_steps", fake_time_cpu_steps)
    monkeypatch.setattr(measure_cell_module, "_setup",
                        lambda cell, options, context, device: SimpleNamespace(step=None))
    row = measure_cell(Cell("cad", "test_scale", 2), "cpu", RunOptions(dataset=None, steps=10, warmup=3), ENVIRONMENT)
    assert row["status"] == "ok", row["error"]
    assert not unexplained_nulls(row)
    return row, calls


@pytest.mark.parametrize("second, still_noisy", [(STEADY, False), (NOISY, True)])
def test_a_noisy_cpu_timing_is_timed_once_more_and_the_steadier_timing_is_recorded(monkeypatch, second,
                                                                                   still_noisy):
    row, calls = _measure(monkeypatch, [NOISY, second])
    assert calls == [(3, 10), (0, 10)]  # once more, already warm
    assert row["step_time_retimed"] is True and row["step_time_noisy"] is still_noisy
    assert row["step_time_median_s"] == second.median and row["throughput_img_s"] == 2 / second.median


def test_a_steady_cpu_timing_is_recorded_as_it_is(monkeypatch):
    row, calls = _measure(monkeypatch, [STEADY])
    assert calls == [(3, 10)]
    assert row["step_time_retimed"] is False and row["step_time_noisy"] is False


def test_an_estimated_cell_says_why_it_has_no_noise_flag():
    row = measure_cell(Cell("cad", "test_scale", 1), "estimate", RunOptions(), ENVIRONMENT)
    assert row["step_time_noisy"] is None and "no training step ran" in row["null_reasons"]["step_time_noisy"]
