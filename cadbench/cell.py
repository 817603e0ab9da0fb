"""Measure one cell of the grid. Run as `python -m cadbench.cell SPEC_JSON RESULT_PATH` for a fresh process.

The measurement functions receive a training step to run; only this module knows which method it builds.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cadbench.backbones import get_backbone
from cadbench.errors import CadbenchError
from cadbench.grid import Cell
from cadbench.results import explain_nulls, new_row

MODES = ("cuda", "cpu", "estimate")
NO_QUALITY = "quality needs a dataset fine-tune and evaluation, which this run did not do"


@dataclass(frozen=True)
class RunOptions:
    mode: str  # cuda: measure on the GPU; cpu: time real steps on the CPU; estimate: no real steps
    steps: int = 10
    warmup: int = 3
    seed: int = 0
    checkpoints: dict[str, str] = field(default_factory=dict)  # backbone -> checkpoint path
    weights: dict[str, str] = field(default_factory=dict)  # backbone -> "random" | "sha256:..."

    def as_dict(self) -> dict:
        return asdict(self)


def measure_cell(cell: Cell, options: RunOptions, environment: dict) -> dict:
    """The cell's result row. Out-of-memory and any other failure become the row's status, never an exception."""
    row = new_row({**cell.as_dict(), "test_scale": get_backbone(cell.backbone).test_scale}, environment)
    row["weights"] = options.weights.get(cell.backbone, "random")
    row["warmup_steps"], row["timed_steps"] = options.warmup, options.steps
    try:
        _fill_parameter_counts(row, cell)
        if options.mode == "cuda":
            _measure_on_cuda(row, cell, options)
        elif options.mode == "cpu":
            _time_on_cpu(row, cell, options)
            _estimate_memory(row, cell)
        else:
            _estimate_memory(row, cell)
        row["status"] = "ok"
    except torch.cuda.OutOfMemoryError:
        row["status"] = "oom"
        row["error"] = f"CUDA out of memory at batch size {cell.batch_size}"
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    except CadbenchError as exc:
        row["status"], row["error"] = "error", str(exc)
    except Exception as exc:  # noqa: BLE001 — a cell's failure is a result; the sweep goes on
        row["status"], row["error"] = "error", one_line(exc)
    return explain_nulls(row, _null_reasons(row, options))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fill_parameter_counts(row: dict, cell: Cell) -> None:
    from cadbench.params import count_parameters

    counts = count_parameters(cell.method, cell.backbone)
    row["trainable_params"], row["total_params"] = counts.trainable_params, counts.total_params


def _setup(cell: Cell, options: RunOptions, device: torch.device):
    from cadbench.train import make_training_setup

    return make_training_setup(cell.method, cell.backbone, cell.batch_size, cell.precision, device=device,
                               checkpoint=options.checkpoints.get(cell.backbone), seed=options.seed)


def _measure_on_cuda(row: dict, cell: Cell, options: RunOptions) -> None:
    from cadbench.measure.cuda import measure_cuda_steps

    device = torch.device("cuda")
    row["device"] = torch.cuda.get_device_name(device)
    row["device_total_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    setup = _setup(cell, options, device)
    measured = measure_cuda_steps(setup.step, options.warmup, options.steps, device)
    row.update(
        peak_memory_bytes=measured.peak_allocated_bytes, memory_source="cuda",
        reserved_memory_bytes=measured.peak_reserved_bytes, nvml_process_memory_bytes=measured.nvml_process_bytes,
        throughput_img_s=measured.times.throughput(cell.batch_size), throughput_source="cuda",
        step_time_median_s=measured.times.median, step_time_p90_s=measured.times.p90,
    )


def _time_on_cpu(row: dict, cell: Cell, options: RunOptions) -> None:
    from cadbench.measure.timing import time_cpu_steps

    row["device"] = "cpu"
    setup = _setup(cell, options, torch.device("cpu"))
    times = time_cpu_steps(setup.step, options.warmup, options.steps)
    row.update(throughput_img_s=times.throughput(cell.batch_size), throughput_source="cpu",
               step_time_median_s=times.median, step_time_p90_s=times.p90)


def _estimate_memory(row: dict, cell: Cell) -> None:
    from cadbench.estimator import estimate_cell

    estimate = estimate_cell(cell.method, cell.backbone, cell.batch_size, cell.precision)
    row.update(estimate.as_row_fields())
    row["memory_source"] = "estimated"


def _null_reasons(row: dict, options: RunOptions) -> dict[str, str]:
    failed = row["status"] != "ok"
    why_failed = f"cell did not finish ({row['status']}: {row['error']})" if failed else None
    reasons = {"error": "no error"}
    if failed:
        reasons.update({"peak_memory_bytes": why_failed, "memory_source": why_failed, "throughput_img_s": why_failed,
                        "throughput_source": why_failed, "step_time_*": why_failed, "flops_per_step": why_failed,
                        "breakdown_*": why_failed, "reserved_memory_bytes": why_failed,
                        "nvml_process_memory_bytes": why_failed, "trainable_params": why_failed,
                        "total_params": why_failed})
    if options.mode == "cuda":
        reasons.update({"flops_per_step": "FLOPs come from the estimator (cadbench estimate)",
                        "breakdown_*": "the memory breakdown comes from the estimator (cadbench estimate)",
                        "nvml_process_memory_bytes": "NVML did not report this process (e.g. hidden in a container)"})
    else:
        no_gpu = "measured only on a CUDA device; this run had none"
        reasons.update({"reserved_memory_bytes": no_gpu, "nvml_process_memory_bytes": no_gpu,
                        "device_total_memory_bytes": no_gpu, "gpu_name": no_gpu, "driver_version": no_gpu,
                        "cuda_version": "torch built without CUDA"})
    if options.mode == "estimate":
        no_steps = "no CUDA device: throughput is measured on a GPU (or timed on the CPU with --device cpu)"
        reasons.update({"throughput_img_s": no_steps, "throughput_source": no_steps, "step_time_*": no_steps,
                        "device": "estimate only: no training step ran on a device"})
    reasons.update({"iou": NO_QUALITY, "dice": NO_QUALITY, "git_commit": "not a git checkout",
                    "segment_anything_version": "segment-anything version unknown",
                    "memory_source": reasons.get("memory_source", "no memory figure")})
    return reasons


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    result_path = Path(argv[1])
    cell = Cell(**spec["cell"])
    options = RunOptions(**spec["options"])
    row = measure_cell(cell, options, spec["environment"])
    if row["status"] == "error" and spec.get("traceback_to_stderr"):
        traceback.print_exc()
    result_path.write_text(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
