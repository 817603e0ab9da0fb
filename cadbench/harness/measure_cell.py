"""Measure one cell of the grid. Run as `python -m cadbench.harness.measure_cell SPEC_JSON RESULT_PATH` for a fresh process.

A cell is measured in one of three modes:
* `cuda`: real training steps on the GPU (memory, throughput), then fine-tune + evaluate for quality;
* `cpu`: real steps on the CPU (throughput marked cpu, memory from the estimator), then fine-tune + evaluate;
* `estimate`: no real step; peak memory, breakdown and FLOPs from the fake-tensor estimator.
The measurement functions receive a training step to run; only this module knows which method it builds.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from cadbench.backbones import get_backbone
from cadbench.errors import CadbenchError
from cadbench.harness.grid import Cell
from cadbench.harness.options import Mode, RunOptions
from cadbench.harness.nulls import NVML_COLUMNS, QUALITY_COLUMNS, null_reasons
from cadbench.harness.results import explain_nulls, new_row


def measure_cell(cell: Cell, mode: Mode, options: RunOptions, environment: dict) -> dict:
    """The cell's result row. Out-of-memory and any other failure become the row's status, never an exception; a
    lever that cannot apply to the cell's method makes a `not_applicable` row saying why, measured in no mode.

    Side data for the report travels in keys starting with '_' (`_timeline`, `_loss_curve`).
    """
    from cadbench.training.levers import not_applicable

    row = new_row({**cell.as_dict(), "test_scale": get_backbone(cell.backbone).test_scale}, environment)
    row["weights"] = options.weights.get(cell.backbone, "random")
    row["alloc_conf"] = options.alloc_conf or "default"  # the caching allocator's settings (real or simulated)
    reason = not_applicable(cell)
    if reason:
        row["status"], row["error"] = "not_applicable", reason
        return explain_nulls(row, null_reasons(row, mode, options))
    if mode != "estimate":
        row["warmup_steps"], row["timed_steps"] = options.warmup, options.steps
    try:
        _fill_parameter_counts(row, cell)
        if mode == "cuda":
            _measure_on_cuda(row, cell, options)
        elif mode == "cpu":
            _time_on_cpu(row, cell, options)
            _estimate_memory(row, cell, options)
        else:
            _estimate_memory(row, cell, options)
        if mode != "estimate" and options.dataset:
            _measure_quality(row, cell, options, torch.device("cuda" if mode == "cuda" else "cpu"))
        row["status"] = "ok"
    except torch.cuda.OutOfMemoryError:
        row["status"] = "oom"
        row["error"] = f"CUDA out of memory at batch size {cell.batch_size}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except CadbenchError as exc:
        row["status"], row["error"] = "error", str(exc)
    except Exception as exc:  # noqa: BLE001 — a cell's failure is a result; the sweep goes on
        row["status"], row["error"] = "error", one_line(exc)
    return explain_nulls(row, null_reasons(row, mode, options))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fill_parameter_counts(row: dict, cell: Cell) -> None:
    from cadbench.params import count_parameters

    counts = count_parameters(cell.method_spec, cell.backbone)
    row["trainable_params"], row["total_params"] = counts.trainable_params, counts.total_params


def _setup(cell: Cell, options: RunOptions, device: torch.device):
    from cadbench.training.step import make_training_setup

    return make_training_setup(cell, device=device, checkpoint=options.checkpoints.get(cell.backbone),
                               seed=options.seed)


def _measure_on_cuda(row: dict, cell: Cell, options: RunOptions) -> None:
    from cadbench.measure.cuda import measure_cuda_steps

    device = torch.device("cuda", torch.cuda.current_device())
    row["device"] = torch.cuda.get_device_name(device)
    row["device_total_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    setup = _setup(cell, options, device)
    measured = measure_cuda_steps(setup.step, options.warmup, options.steps, device)
    row.update(
        peak_memory_bytes=measured.peak_allocated_bytes, memory_source="cuda",
        reserved_memory_bytes=measured.peak_reserved_bytes,
        nvml_process_memory_bytes=measured.nvml.end_bytes, nvml_process_peak_bytes=measured.nvml.peak_bytes,
        fragmentation_ratio=(measured.peak_reserved_bytes / measured.peak_allocated_bytes
                             if measured.peak_allocated_bytes else None),
        throughput_img_s=measured.times.throughput(cell.batch_size), throughput_source="cuda",
        step_time_median_s=measured.times.median, step_time_p90_s=measured.times.p90,
    )
    for column in NVML_COLUMNS:
        if row[column] is None and measured.nvml.reason:
            row["null_reasons"][column] = measured.nvml.reason
    del setup
    torch.cuda.empty_cache()


def _time_on_cpu(row: dict, cell: Cell, options: RunOptions) -> None:
    from cadbench.measure.timing import time_cpu_steps

    row["device"] = "cpu"
    setup = _setup(cell, options, torch.device("cpu"))
    times = time_cpu_steps(setup.step, options.warmup, options.steps)
    row.update(throughput_img_s=times.throughput(cell.batch_size), throughput_source="cpu",
               step_time_median_s=times.median, step_time_p90_s=times.p90)


def _estimate_memory(row: dict, cell: Cell, options: RunOptions) -> None:
    from cadbench.estimator import AllocatorConfig, estimate_cell

    estimate = estimate_cell(cell, alloc_conf=AllocatorConfig.parse(options.alloc_conf))
    row.update(estimate.as_row_fields())
    row["memory_source"] = "estimated"
    row["_timeline"] = [list(point) for point in estimate.timeline]


def _measure_quality(row: dict, cell: Cell, options: RunOptions, device: torch.device) -> None:
    """Fine-tune a fresh copy of the method on the train split, then score the test split."""
    from cadbench.datasets import load_dataset
    from cadbench.training.quality import evaluate, fine_tune
    from cadbench.training.step import prepare_cell

    image_size = get_backbone(cell.backbone).image_size
    train = load_dataset(options.dataset, "train", image_size=image_size, layout=options.layout, seed=options.seed)
    test = load_dataset(options.dataset, "test", image_size=image_size, layout=options.layout, seed=options.seed)
    torch.manual_seed(options.seed)
    trainee, plan = prepare_cell(cell, checkpoint=options.checkpoints.get(cell.backbone), device=device)
    losses = fine_tune(trainee.method, trainee.optimizer, train, options.train_steps, cell.batch_size, plan,
                       seed=options.seed)
    scores = evaluate(trainee.method, test, batch_size=cell.batch_size)
    row.update({column: scores[column] for column in QUALITY_COLUMNS})
    row.update(quality_dataset=f"{train.name} (train {len(train)}, test {len(test)} images, "
                               f"{scores['empty_masks']} empty test masks)",
               train_steps=options.train_steps, _loss_curve=losses)


def main(argv: list[str]) -> int:
    from cadbench.harness.files import strict_json, write_atomically
    from cadbench.harness.processes import die_with_parent
    from cadbench.harness.results import finite_row

    die_with_parent()  # a cell process never outlives its run, even one killed with kill -9
    spec = json.loads(argv[0])
    alloc_conf = spec["options"].get("alloc_conf")
    if spec["mode"] == "cuda" and alloc_conf:  # this fresh process has not started CUDA: its allocator reads this
        os.environ["PYTORCH_ALLOC_CONF"] = alloc_conf
    row = measure_cell(Cell(**spec["cell"]), spec["mode"], RunOptions(**spec["options"]), spec["environment"])
    write_atomically(Path(argv[1]), strict_json(finite_row(row)))  # whole or absent, strict JSON
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
