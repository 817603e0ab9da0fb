"""Why a column of a result row is null: the reasons, by how the cell was measured and how it ended.

A null is never a stand-in for zero: `results.rows.explain_nulls` records one of these reasons for every null column.
A part of the row that was measured says first why it left a column null (`RowPart.null_reasons`: NVML's own
reason, the estimator's unsimulated allocator settings, a protocol that fine-tunes another cell, the environment's
unknown versions); these are the reasons for the rest: the columns a cell's mode never fills, and those of a cell
that did not finish.
"""

from __future__ import annotations

from cadbench.harness.options import RunOptions
from cadbench.measure.cuda import NO_ALLOCATION
from cadbench.measure.device import NO_GPU
from cadbench.measure.nvml import NVML_COLUMNS
from cadbench.training.quality import FINE_TUNE_COLUMNS, QUALITY_COLUMNS
from cadbench.vocabulary.modes import Mode


def null_reasons(row: dict, mode: Mode, options: RunOptions) -> dict[str, str]:
    """Why each column of a measured row may be null, given how the cell was measured (results.rows.explain_nulls)."""
    reasons = {"error": "no error"}
    unfinished: dict[str, str] = {}  # a cell that did not finish: why, before any reason its mode gives
    if row["status"] != "ok":
        why = (f"not measured: {row['error']}" if row["status"] == "not_applicable"
               else f"cell did not finish ({row['status']}: {row['error']})")
        unfinished.update({column: why for column in (
            "peak_memory_bytes", "memory_source", "throughput_img_s", "throughput_source", "step_time_*",
            "flops_per_step", "breakdown_*", "reserved_memory_bytes", *NVML_COLUMNS, "device",
            "device_total_memory_bytes", "fragmentation_ratio", "oom_capacity_bytes", "trainable_params",
            "total_params", *QUALITY_COLUMNS, *FINE_TUNE_COLUMNS, "protocol")})
    if mode == "cuda":
        reasons.update({"oom_capacity_bytes": "the OOM line is simulated by the estimator (cadbench estimate); a GPU "
                                              "run reports its own out-of-memory as status oom",
                        "fragmentation_ratio": NO_ALLOCATION,
                        "flops_per_step": "FLOPs come from the estimator (cadbench estimate)",
                        "breakdown_*": "the memory breakdown comes from the estimator (cadbench estimate)",
                        # the measurement records NVML's own reason; this one covers a row it never reached
                        **dict.fromkeys(NVML_COLUMNS, "NVML did not report this process")})
    else:
        not_simulated = _allocator_not_simulated(options)
        reasons.update({"reserved_memory_bytes": not_simulated, "fragmentation_ratio": not_simulated,
                        "oom_capacity_bytes": not_simulated, **dict.fromkeys(NVML_COLUMNS, NO_GPU),
                        "device_total_memory_bytes": NO_GPU, "gpu_name": NO_GPU, "driver_version": NO_GPU})
    if mode == "estimate":
        no_steps = ("no training step ran for this cell (estimate only): throughput needs a GPU, "
                    "or --device cpu for CPU timings")
        no_quality = ("quality needs a real fine-tune, which this cell did not run (memory estimate only: cadbench "
                      "estimate, or no GPU for a full-size model)")
        reasons.update({"throughput_*": no_steps, "step_time_*": no_steps, "timed_steps": no_steps,
                        "warmup_steps": no_steps, "device": "estimate only: no training step ran on a device",
                        **{column: no_quality for column in (*QUALITY_COLUMNS, *FINE_TUNE_COLUMNS)}})
    elif not options.dataset:
        no_quality = "quality was not asked for (--no-quality)"
        reasons.update({column: no_quality for column in (*QUALITY_COLUMNS, *FINE_TUNE_COLUMNS)})
    if options.epochs is None:
        reasons.setdefault("epochs", f"the {options.protocol} protocol counts steps (train_steps), not epochs")
    if not options.save_weights:
        reasons.setdefault("saved_weights", "--save-weights was not given")
        reasons.setdefault("saved_weights_sha256", "--save-weights was not given")
    reasons.update({"gpu_index": "an estimate uses no GPU" if mode == "estimate" else  # launchers fill these
                    "not pinned to one GPU (only --gpus pins a cell to its GPU)",
                    "slurm_*": "not run as a Slurm job"})
    reasons.update({"driver_version": reasons.get("driver_version", "NVML could not tell the driver version"),
                    "memory_source": reasons.get("memory_source", "no memory figure"),
                    "ber": reasons.get("ber", "not computed")})
    return {**reasons, **unfinished}


def _allocator_not_simulated(options: RunOptions) -> str:
    """Why an estimated row has no reserved memory or OOM line: allocator settings the simulation cannot model."""
    from cadbench.estimator.alloc_conf import AllocatorConfig  # light: no torch

    return (AllocatorConfig.parse(options.alloc_conf).why_not_simulated
            or "measured only on a CUDA device, or simulated by the estimator; this cell has neither")
