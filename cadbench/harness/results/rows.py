"""The row schema: a row per cell, its columns, and the rules its values keep.

A row per cell; columns that cannot be filled are null and `null_reasons` says why (never a zero standing in for
"unknown", and never a NaN: a non-finite number becomes null with its reason).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

import pandas as pd

from cadbench.files import plain_scalar
from cadbench.harness.environment import EnvironmentColumns
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.outcomes import STATUSES, Status

# Columns every row has after its identity; those that may be null need a reason in `null_reasons` when they are.
MEASURED_COLUMNS = (
    "status", "error",
    "peak_memory_bytes", "memory_source", "reserved_memory_bytes", "nvml_process_memory_bytes",
    "nvml_process_peak_bytes", "fragmentation_ratio", "oom_capacity_bytes", "alloc_conf",
    "device_total_memory_bytes",
    "step_kind",  # training, or inference for a method that does not train (zero_shot)
    "throughput_img_s", "throughput_source", "step_time_median_s", "step_time_p90_s",
    "step_time_noisy", "step_time_retimed",  # p90 over 2x the median (measure/timing.py); CPU cells timed again once
    "timed_steps", "warmup_steps",
    "flops_per_step",
    "breakdown_parameters_bytes", "breakdown_gradients_bytes", "breakdown_optimizer_states_bytes",
    "breakdown_activations_bytes", "breakdown_temporaries_bytes",
    "iou", "dice", "s_measure", "mean_e_measure", "weighted_f_measure", "mae", "ber", "quality_dataset",
    "train_steps", "protocol", "epochs", "dataset_split", "empty_train_masks", "empty_test_masks",
    "mask_grey_values", "objects_per_image", "images_without_objects", "test_objects",
    "eval_box_margin_px", "train_box_jitter", "zero_shot_iou", "zero_shot_dice", "box_fill_iou", "box_fill_dice",
    "saved_weights", "saved_weights_sha256",
    "trainable_params", "total_params", "weights", "device",
    "gpu_index", "slurm_job_id", "slurm_state", "slurm_log",  # where the cell ran (see harness/launchers)
    "gpu_name", "driver_version", "cuda_version", "torch_version", "segment_anything_version", "cadbench_version",
    "git_commit", "null_reasons",
)


def identity_columns() -> tuple[str, ...]:
    """The cell's columns (cadbench.vocabulary.cell.Cell: its fields and each declared lever), then test_scale and
    image_px (the input side the cell ran at, in pixels: its image_size is 0 at the backbone's native size)."""
    return (*Cell.key_columns(), "test_scale", "image_px")


def identity_of(cell: Cell) -> dict[str, Any]:
    """A cell's identity columns (see identity_columns)."""
    from cadbench.backbones import get_backbone

    spec = get_backbone(cell.backbone)
    return {**cell.as_dict(), "test_scale": spec.test_scale, "image_px": spec.input_size(cell.image_size)}


def contract_columns() -> tuple[str, ...]:
    """Every column of a row, in order: the identity (which grows with each declared lever), then the rest."""
    return (*identity_columns(), *MEASURED_COLUMNS)


def never_null() -> tuple[str, ...]:
    return (*identity_columns(), "status", "null_reasons")


# What any reader needs of a row: the cell's identity and how it ended.
ROW_REQUIRED_COLUMNS = (*Cell.positional_columns(), "status")


def new_row(cell: dict, environment: dict) -> dict:
    """A row with every contract column present, identity and environment filled in, the rest null."""
    row = {column: None for column in contract_columns()}
    row.update(cell)
    row.update(EnvironmentColumns.of(environment).columns())
    row["null_reasons"] = {}
    return row


def set_outcome(row: dict, status: Status, error: str | None = None) -> dict:
    """Record how the row's cell ended: its status and, unless it is ok, why (the row's `error`)."""
    row["status"], row["error"] = status, error
    return row


def explain_nulls(row: dict, *reasons: Mapping[str, str]) -> dict:
    """Record why columns are null. Each of `reasons` maps a column (or a prefix ending in '*') to its reason; for a
    column several name, the first mapping that names it wins."""
    for column in contract_columns():
        if row.get(column) is not None or column in never_null() or column in row["null_reasons"]:
            continue
        reason = next((reason for mapping in reasons for pattern, reason in mapping.items()
                       if column == pattern or (pattern.endswith("*") and column.startswith(pattern[:-1]))), None)
        if reason is not None:
            row["null_reasons"][column] = reason
    return row


def unexplained_nulls(row: dict) -> list[str]:
    return [column for column in contract_columns()
            if row.get(column) is None and column not in never_null() and column not in row.get("null_reasons", {})]


def finite_row(row: dict) -> dict:
    """The row with every non-finite number (NaN, ±inf) made null: a column gets null and the reason in
    `null_reasons`; inside side data (a loss curve, a timeline) the value becomes null. numpy scalars become plain
    numbers. Strict JSON has no NaN, and a NaN is no measurement."""
    cleaned = dict(row)
    reasons = dict(cleaned.get("null_reasons") or {})
    for column, value in row.items():
        if column.startswith("_"):
            cleaned[column] = _finite(value)
            continue
        value = _plain(value)
        cleaned[column] = value
        if isinstance(value, float) and not math.isfinite(value):
            cleaned[column] = None
            reasons.setdefault(column, f"the measurement gave {value} (not a finite number)")
    if "null_reasons" in row or reasons:
        cleaned["null_reasons"] = reasons
    return cleaned


def _finite(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (str, bytes, bool, int, float, list, tuple, dict)) or value is None:
        return value
    try:
        return plain_scalar(value)
    except TypeError:
        return value


def row_problem(value: Any, cell_type: type[Cell] = Cell) -> str | None:
    """Why a journal line's value is not a result row, or None."""
    if not isinstance(value, dict):
        return f"not a result row (a JSON {type(value).__name__})"
    missing = [column for column in (*cell_type.positional_columns(), "status") if value.get(column) is None]
    if missing:
        return f"not a result row (no {', '.join(repr(column) for column in missing)})"
    if value["status"] not in STATUSES:
        return f"status {value['status']!r} is not one of {', '.join(STATUSES)}"
    return None


def rows_to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(contract_columns()))
    frame["null_reasons"] = frame["null_reasons"].map(lambda reasons: json.dumps(reasons or {}, sort_keys=True))
    return frame
