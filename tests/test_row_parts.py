"""Each producer of a row's columns gives a `RowPart` (cadbench.vocabulary.outcomes): the columns it fills, all of
them contract columns, and a reason for exactly those it leaves null. measure_cell merges the parts; the rows it
writes are checked in tests/test_measure_cell_*.py."""

from __future__ import annotations

import pytest

from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.estimator.estimate import Breakdown, MemoryEstimate
from cadbench.harness.environment import EnvironmentColumns, collect_environment
from cadbench.harness.results.rows import contract_columns
from cadbench.measure.cuda import CudaMeasurement
from cadbench.measure.device import DeviceDescription
from cadbench.measure.nvml import NvmlReading
from cadbench.measure.timing import StepTimes, StepTiming
from cadbench.params import ParameterCount
from cadbench.training.quality import QUALITY_COLUMNS, QualityElsewhere, QualityMeasurement
from cadbench.training.weights import SavedWeights

TIMES = StepTimes([0.2, 0.25, 0.2])
NO_NVML = NvmlReading(None, None, 0, reason="NVML could not start: no driver")


def _estimate(alloc_conf: str = "", reserved: int | None = 30) -> MemoryEstimate:
    return MemoryEstimate(peak_bytes=15, breakdown=Breakdown(1, 2, 3, 4, 5), timeline=(("forward", 15),),
                          flops_per_step=7, replayed_peak_bytes=15, workspace_bytes=0, reserved_bytes=reserved,
                          allocator_budget_bytes=None if reserved is None else 40,
                          alloc_conf=AllocatorConfig.parse(alloc_conf))


PARTS = {
    "cuda measurement": CudaMeasurement(100, 150, NvmlReading(200, 210, 3), TIMES),
    "cuda measurement, NVML silent, nothing allocated": CudaMeasurement(0, 0, NO_NVML, TIMES),
    "cuda timing": CudaMeasurement(100, 150, NO_NVML, TIMES).timing(2),
    "cpu timing": StepTiming(TIMES, 2, "cpu", retimed=True),
    "gpu": DeviceDescription("NVIDIA H100", 80 << 30),
    "cpu": DeviceDescription("cpu"),
    "estimate": _estimate(),
    "estimate, allocator not simulated": _estimate("per_process_memory_fraction:0.5", reserved=None),
    "quality": QualityMeasurement(scores=dict.fromkeys(QUALITY_COLUMNS, 0.5), protocol="quick", dataset="4 images",
                                  split="80/20", train_steps=3, epochs=None, empty_train_masks=0, empty_test_masks=0,
                                  mask_grey_values=0, loss_curve={"losses": [1.0]}),
    "quality elsewhere": QualityElsewhere("the cad-paper protocol fine-tunes at batch size 4"),
    "saved weights": SavedWeights("weights/cad.safetensors", "ab" * 32),
    "parameters": ParameterCount("cad", "", "test_scale", True, 10, 100, 128),
    "environment without git, GPU or CUDA": EnvironmentColumns.of({"torch_version": "2.5.1+cpu",
                                                                   "cadbench_version": "0.1.0"}),
    "this environment": EnvironmentColumns.of(collect_environment()),
}


@pytest.mark.parametrize("name", PARTS)
def test_a_part_fills_contract_columns_and_explains_exactly_the_ones_it_leaves_null(name):
    part = PARTS[name]
    columns = part.columns()
    assert set(columns) <= set(contract_columns())
    reasons = part.null_reasons()
    assert all(isinstance(reason, str) and reason for reason in reasons.values())
    known = {"gpu_name", "driver_version"}  # why these are null follows from how the cell ran (harness.nulls)
    assert set(reasons) == {column for column, value in columns.items() if value is None} - known
    assert all(key.startswith("_") for key in part.side_data())


def test_a_part_says_where_its_figures_came_from():
    assert PARTS["cuda measurement"].columns()["memory_source"] == "cuda"
    assert PARTS["estimate"].columns()["memory_source"] == "estimated"
    assert PARTS["cuda timing"].columns()["throughput_source"] == "cuda"
    assert PARTS["cuda timing"].columns()["step_time_retimed"] is False
    assert PARTS["cpu timing"].columns()["throughput_img_s"] == 2 / TIMES.median
    assert PARTS["estimate"].side_data() == {"_timeline": [["forward", 15]]}
    assert PARTS["saved weights"].columns()["saved_weights_sha256"] == "sha256:" + "ab" * 32
    assert "per_process_memory_fraction" in PARTS["estimate, allocator not simulated"].null_reasons()[
        "reserved_memory_bytes"]
