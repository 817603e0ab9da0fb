"""Why a column of a result row is null: the reasons, by how the cell was measured and how it ended.

A null is never a stand-in for zero: `results.rows.explain_nulls` records one of these reasons for every null column.
"""

from __future__ import annotations

from cadbench.harness.options import RunOptions
from cadbench.vocabulary.modes import Mode

QUALITY_COLUMNS = ("iou", "dice", "s_measure", "mean_e_measure", "weighted_f_measure", "mae", "ber")
NVML_COLUMNS = ("nvml_process_memory_bytes", "nvml_process_peak_bytes")  # NVML's figure after the steps; its peak
# What a fine-tune records beside its scores (null exactly when the scores are, unless a reason below says otherwise)
FINE_TUNE_COLUMNS = ("quality_dataset", "train_steps", "epochs", "dataset_split", "empty_train_masks",
                     "empty_test_masks", "mask_grey_values", "saved_weights", "saved_weights_sha256")


def null_reasons(row: dict, mode: Mode, options: RunOptions) -> dict[str, str]:
    """Why each column of a measured row may be null, given how the cell was measured (results.rows.explain_nulls)."""
    reasons = {"error": "no error"}
    if row["status"] != "ok":
        why = (f"not measured: {row['error']}" if row["status"] == "not_applicable"
               else f"cell did not finish ({row['status']}: {row['error']})")
        reasons.update({column: why for column in (
            "peak_memory_bytes", "memory_source", "throughput_img_s", "throughput_source", "step_time_*",
            "flops_per_step", "breakdown_*", "reserved_memory_bytes", *NVML_COLUMNS, "device",
            "device_total_memory_bytes", "fragmentation_ratio", "oom_capacity_bytes", "trainable_params",
            "total_params", *QUALITY_COLUMNS, *FINE_TUNE_COLUMNS, "protocol")})
    if mode == "cuda":
        reasons.update({"oom_capacity_bytes": "the OOM line is simulated by the estimator (cadbench estimate); a GPU "
                                              "run reports its own out-of-memory as status oom",
                        "fragmentation_ratio": "the step allocated no GPU memory",
                        "flops_per_step": "FLOPs come from the estimator (cadbench estimate)",
                        "breakdown_*": "the memory breakdown comes from the estimator (cadbench estimate)",
                        # the measurement records NVML's own reason; this one covers a row it never reached
                        **dict.fromkeys(NVML_COLUMNS, "NVML did not report this process")})
    else:
        no_gpu = "measured only on a CUDA device; this cell ran without one"
        not_simulated = _allocator_not_simulated(options)
        reasons.update({"reserved_memory_bytes": not_simulated, "fragmentation_ratio": not_simulated,
                        "oom_capacity_bytes": not_simulated, **dict.fromkeys(NVML_COLUMNS, no_gpu),
                        "device_total_memory_bytes": no_gpu, "gpu_name": no_gpu, "driver_version": no_gpu,
                        "cuda_version": "torch built without CUDA"})
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
    reasons.update({"git_commit": "not a git checkout", "segment_anything_version": "version unknown",
                    "driver_version": reasons.get("driver_version", "NVML could not tell the driver version"),
                    "cuda_version": reasons.get("cuda_version", "torch built without CUDA"),
                    "memory_source": reasons.get("memory_source", "no memory figure"),
                    "ber": reasons.get("ber", "not computed")})
    return reasons


def _allocator_not_simulated(options: RunOptions) -> str:
    """Why an estimated row has no reserved memory or OOM line: allocator settings the simulation cannot model."""
    from cadbench.estimator.alloc_conf import AllocatorConfig  # light: no torch

    unmodelled = AllocatorConfig.parse(options.alloc_conf).not_simulated
    if unmodelled:
        return (f"allocator setting {', '.join(unmodelled)} is not simulated (the caching-allocator simulation would "
                f"ignore it); measure on a GPU (cadbench run)")
    return "measured only on a CUDA device, or simulated by the estimator; this cell has neither"
