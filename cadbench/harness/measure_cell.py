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
import re
import sys
from pathlib import Path

import torch

from cadbench.backbones import get_backbone
from cadbench.errors import CadbenchError
from cadbench.harness.nulls import FINE_TUNE_COLUMNS, NVML_COLUMNS, QUALITY_COLUMNS, null_reasons
from cadbench.harness.options import RunOptions
from cadbench.harness.results.rows import explain_nulls, new_row, set_outcome
from cadbench.methods import Method
from cadbench.training.finetune import TrainingPlan
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.modes import Mode


def measure_cell(cell: Cell, mode: Mode, options: RunOptions, environment: dict) -> dict:
    """The cell's result row. Out-of-memory and any other failure become the row's status, never an exception. The
    sweep decides, once per cell, whether its levers apply to its method: only cells where they do reach this
    function (`not_applicable_row` writes the others).

    Side data for the report travels in keys starting with '_' (`_timeline`, `_loss_curve`).
    """
    row = _identity_row(cell, options, environment)
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
        set_outcome(row, "ok")
    except torch.cuda.OutOfMemoryError:
        set_outcome(row, "oom", f"CUDA out of memory at batch size {cell.batch_size}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except CadbenchError as exc:
        set_outcome(row, "error", str(exc))
    except Exception as exc:  # noqa: BLE001 — a cell's failure is a result; the sweep goes on
        set_outcome(row, "error", one_line(exc))
    return explain_nulls(row, null_reasons(row, mode, options))


def not_applicable_row(cell: Cell, reason: str, mode: Mode, options: RunOptions, environment: dict) -> dict:
    """The row of a cell whose lever cannot apply to its method (status `not_applicable`, `reason` as its error):
    measured in no mode."""
    row = _identity_row(cell, options, environment)
    set_outcome(row, "not_applicable", reason)
    return explain_nulls(row, null_reasons(row, mode, options))


def _identity_row(cell: Cell, options: RunOptions, environment: dict) -> dict:
    row = new_row({**cell.as_dict(), "test_scale": get_backbone(cell.backbone).test_scale}, environment)
    row["weights"] = options.weights.get(cell.backbone, "random")
    row["alloc_conf"] = options.alloc_conf or "default"  # the caching allocator's settings (real or simulated)
    row["protocol"] = options.protocol
    return row


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fill_parameter_counts(row: dict, cell: Cell) -> None:
    from cadbench.params import count_parameters

    counts = count_parameters(cell.method_spec, cell.backbone)
    row["trainable_params"], row["total_params"] = counts.trainable_params, counts.total_params


def _setup(cell: Cell, options: RunOptions, device: torch.device):
    from cadbench.training.setup import make_training_setup

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
        # flagged, not timed again: CUDA events time the GPU's work, which other processes' CPU load hardly moves
        step_time_noisy=measured.times.noisy, step_time_retimed=False,
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
    retimed = times.noisy
    if retimed:  # something outside the step slowed some steps: time once more and keep the steadier timing
        times = min(times, time_cpu_steps(setup.step, 0, options.steps), key=lambda timing: timing.spread)
    row.update(throughput_img_s=times.throughput(cell.batch_size), throughput_source="cpu",
               step_time_median_s=times.median, step_time_p90_s=times.p90, step_time_noisy=times.noisy,
               step_time_retimed=retimed)


def _estimate_memory(row: dict, cell: Cell, options: RunOptions) -> None:
    from cadbench.estimator import AllocatorConfig, estimate_cell

    estimate = estimate_cell(cell, alloc_conf=AllocatorConfig.parse(options.alloc_conf))
    row.update(estimate.as_row_fields())
    row["memory_source"] = "estimated"
    row["_timeline"] = [list(point) for point in estimate.timeline]


def _measure_quality(row: dict, cell: Cell, options: RunOptions, device: torch.device) -> None:
    """Fine-tune a fresh copy of the method under the run's protocol on the train split, then score the test split.

    A paper protocol fixes batch size and precision: other cells get null quality with the reason. The fine-tune
    keeps an epoch checkpoint under --out while it runs, so that a rerun resumes it; with --save-weights its
    trainable weights are kept under --out/weights/.
    """
    from cadbench.datasets import open_splits
    from cadbench.training.finetune import TrainingPlan, fine_tune
    from cadbench.training.protocols import get_protocol
    from cadbench.training.quality import evaluate
    from cadbench.training.setup import prepare_cell

    protocol = get_protocol(options.protocol)
    elsewhere = protocol.trains_cell(cell.batch_size, cell.precision)
    if elsewhere:
        row["null_reasons"].update({column: elsewhere for column in (*QUALITY_COLUMNS, *FINE_TUNE_COLUMNS)})
        return
    splits = open_splits(options.dataset, get_backbone(cell.backbone).image_size, layout=options.layout,
                         seed=options.seed, test_fraction=options.test_fraction, val_fraction=options.val_fraction)
    plan = TrainingPlan.resolve(protocol, cell.batch_size, cell.precision, options.epochs, options.train_steps,
                                options.seed)
    torch.manual_seed(options.seed)
    trainee, step_plan = prepare_cell(cell, checkpoint=options.checkpoints.get(cell.backbone), device=device)
    state = _fine_tune_state(cell, options)
    validating_on_test = splits.validation is splits.test
    history = fine_tune(trainee.method, splits.train, plan, validation=splits.validation,
                        checkpoint=state, fingerprint=_fingerprint(cell, options), step=step_plan,
                        workers=min(8, os.cpu_count() or 1) if device.type == "cuda" else 0,
                        validate_last_epoch=not validating_on_test)
    scores = evaluate(trainee.method, splits.test, batch_size=plan.batch_size, geometry=protocol.geometry)
    if validating_on_test:
        history.set_last_validation(scores)  # the same weights on the same images: not scored twice
    row.update({column: scores[column] for column in QUALITY_COLUMNS})
    row.update(quality_dataset=splits.summary(), dataset_split=splits.split_description(),
               train_steps=len(history.losses), epochs=plan.epochs, empty_train_masks=splits.train.empty_masks,
               empty_test_masks=splits.test.empty_masks, mask_grey_values=splits.grey_values,
               _loss_curve={"protocol": protocol.name, "plan": plan.describe(), **history.curve()})
    if options.save_weights:
        _save_trained_weights(row, cell, options, trainee.method, plan, len(history.losses), device)
    if state is not None:
        state.unlink(missing_ok=True)  # finished: nothing left to resume


def _save_trained_weights(row: dict, cell: Cell, options: RunOptions, method: Method, plan: TrainingPlan,
                          steps: int, device: torch.device) -> None:
    """--save-weights: the method's trainable weights under --out/weights/, named in the row with their sha256.

    The metadata says what `cadbench evaluate` needs to rebuild the frozen base and score the same split."""
    from cadbench.training.weights import base_fingerprint, save_weights

    if options.state_dir is None:
        raise ValueError("save_weights needs state_dir, the --out folder (cadbench.run sets it)")
    relative = Path("weights") / f"{_slug(cell)}.safetensors"
    sha256 = save_weights(method, Path(options.state_dir) / relative, {
        "method": cell.method_spec, "backbone": cell.backbone, "cell": cell.key, "protocol": plan.protocol.name,
        "epochs": str(plan.epochs), "train_steps": str(steps), "seed": str(options.seed),
        "base_weights": row["weights"], "base_fingerprint": base_fingerprint(method), "initialised_on": device.type,
        "dataset": str(options.dataset), "layout": str(options.layout), "test_fraction": str(options.test_fraction)})
    row.update(saved_weights=str(relative), saved_weights_sha256=f"sha256:{sha256}")


def _slug(cell: Cell) -> str:
    """The cell's key as a file name: 'cad/vit_b/4/fp32' -> 'cad-vit_b-4-fp32'."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", cell.key.replace(Cell.KEY_SEPARATOR, "-"))


def _fine_tune_state(cell: Cell, options: RunOptions) -> Path | None:
    """Where an unfinished fine-tune of this cell keeps its epoch checkpoint (None outside a run with --out)."""
    if options.state_dir is None:
        return None
    return Path(options.state_dir) / "fine-tunes" / f"{_slug(cell)}.pt"


def _fingerprint(cell: Cell, options: RunOptions) -> str:
    """What an epoch checkpoint must match to be resumed: the cell and every setting its fine-tune depends on."""
    settings = {name: getattr(options, name) for name in (
        "seed", "dataset", "layout", "train_steps", "protocol", "epochs", "test_fraction", "val_fraction")}
    return json.dumps({"cell": cell.key, "weights": options.weights.get(cell.backbone, "random"), **settings},
                      sort_keys=True)


def main(argv: list[str]) -> int:
    from cadbench.harness.files import strict_json, write_atomically
    from cadbench.harness.processes import die_with_parent
    from cadbench.harness.results.rows import finite_row

    die_with_parent()  # a cell process never outlives its run, even one killed with kill -9
    spec = json.loads(argv[0])
    alloc_conf = spec["options"].get("alloc_conf")
    if spec["mode"] == "cuda" and alloc_conf:  # this fresh process has not started CUDA: its allocator reads this
        os.environ["PYTORCH_ALLOC_CONF"] = alloc_conf
    environment = spec["environment"]
    if environment is None:  # run where the submitting process is not (a Slurm node): describe this machine
        from cadbench.harness.environment import collect_environment

        environment = collect_environment()
    row = measure_cell(Cell(**spec["cell"]), spec["mode"], RunOptions(**spec["options"]), environment)
    write_atomically(Path(argv[1]), strict_json(finite_row(row)))  # whole or absent, strict JSON
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
