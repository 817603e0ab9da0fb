"""Result rows and their persistence.

A row per cell; columns that cannot be filled are null and `null_reasons` says why (never a zero standing in for
"unknown"). Each finished cell is appended to `results.jsonl` (flushed and fsynced) the moment it finishes, and
`results.json` / `results.csv` are rewritten atomically (temp file + rename), so a sweep killed half-way loses no
finished cell and a rerun with the same `--out` resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd

from cadbench.errors import CadbenchError
from cadbench.harness.grid import Cell

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error")
FINISHED_STATUSES = ("ok", "oom")  # error cells are retried on resume

# Columns every row has; those that may be null need a reason in `null_reasons` when they are. The identity columns
# are the cell's fields (cadbench.harness.grid.Cell), each its own column.
IDENTITY_COLUMNS = (*Cell.key_columns(), "test_scale")
CONTRACT_COLUMNS = (
    *IDENTITY_COLUMNS, "status", "error",
    "peak_memory_bytes", "memory_source", "reserved_memory_bytes", "nvml_process_memory_bytes",
    "device_total_memory_bytes",
    "throughput_img_s", "throughput_source", "step_time_median_s", "step_time_p90_s", "timed_steps", "warmup_steps",
    "flops_per_step",
    "breakdown_parameters_bytes", "breakdown_gradients_bytes", "breakdown_optimizer_states_bytes",
    "breakdown_activations_bytes", "breakdown_temporaries_bytes",
    "iou", "dice", "s_measure", "mean_e_measure", "weighted_f_measure", "mae", "ber", "quality_dataset",
    "train_steps", "protocol", "epochs", "dataset_split", "empty_train_masks", "empty_test_masks",
    "mask_grey_values", "saved_weights", "saved_weights_sha256", "trainable_params", "total_params", "weights", "device",
    "gpu_name", "driver_version", "cuda_version", "torch_version", "segment_anything_version", "cadbench_version",
    "git_commit", "null_reasons",
)
NEVER_NULL = (*IDENTITY_COLUMNS, "status", "null_reasons")
MEMORY_SOURCES = ("cuda", "estimated", "cpu")


def new_row(cell: dict, environment: dict) -> dict:
    """A row with every contract column present, identity and environment filled in, the rest null."""
    row = {column: None for column in CONTRACT_COLUMNS}
    row.update(cell)
    for column in ("gpu_name", "driver_version", "cuda_version", "torch_version", "segment_anything_version",
                   "cadbench_version", "git_commit"):
        row[column] = environment.get(column)
    row["null_reasons"] = {}
    return row


def explain_nulls(row: dict, reasons: dict[str, str]) -> dict:
    """Record why columns are null. `reasons` maps a column (or a prefix ending in '*') to its reason."""
    for column in CONTRACT_COLUMNS:
        if row.get(column) is not None or column in NEVER_NULL or column in row["null_reasons"]:
            continue
        for pattern, reason in reasons.items():
            if column == pattern or (pattern.endswith("*") and column.startswith(pattern[:-1])):
                row["null_reasons"][column] = reason
                break
    return row


def unexplained_nulls(row: dict) -> list[str]:
    return [column for column in CONTRACT_COLUMNS
            if row.get(column) is None and column not in NEVER_NULL and column not in row.get("null_reasons", {})]


class ResultStore:
    """The result files of one output folder; rows are keyed by `cell_type`'s fields (see `Cell.key_of`)."""

    def __init__(self, out_dir: str | Path, cell_type: type[Cell] = Cell) -> None:
        self.out_dir = Path(out_dir)
        self.key_of = cell_type.key_of
        self.jsonl = self.out_dir / "results.jsonl"
        self.json = self.out_dir / "results.json"
        self.csv = self.out_dir / "results.csv"
        self.run_file = self.out_dir / "run.json"

    def open(self, run_config: dict, environment: dict) -> None:
        """Create the folder (or check it can be resumed with this configuration). Writes nothing else."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.out_dir, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise CadbenchError(f"--out {self.out_dir} is not writable: {exc.strerror or exc}") from None
        if self.run_file.exists():
            previous = json.loads(self.run_file.read_text())
            differing = sorted(key for key in set(previous["config"]) | set(run_config)
                               if previous["config"].get(key) != run_config.get(key))
            if differing:
                raise CadbenchError(
                    f"--out {self.out_dir} holds results measured with different settings ({', '.join(differing)}); "
                    f"use another --out or the same settings to resume")
        write_atomically(self.run_file, json.dumps({"config": run_config, "environment": environment}, indent=2))
        self.environment = environment
        self.run_config = run_config

    def rows(self) -> list[dict]:
        """The latest row of each cell, in the order cells first appeared. A torn last line is ignored."""
        latest: dict[str, dict] = {}
        if self.jsonl.exists():
            for line in self.jsonl.read_text().splitlines():
                try:
                    row = json.loads(line)
                    latest[self.key_of(row)] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line torn by a kill mid-write, or not a row
        return list(latest.values())

    def finished_keys(self) -> set[str]:
        return {self.key_of(row) for row in self.rows() if row["status"] in FINISHED_STATUSES}

    def append(self, row: dict) -> None:
        """Persist a finished cell. Keys starting with '_' are side data kept beside the table, not columns:
        `_timeline` (live memory over one step) goes to timelines.json and `_loss_curve` (fine-tuning losses) to
        loss_curves.json, both keyed by cell."""
        row = dict(row)
        side_files = {"_timeline": "timelines.json", "_loss_curve": "loss_curves.json"}
        for key in [key for key in row if key.startswith("_")]:
            value = row.pop(key)
            if key in side_files and value is not None:
                self._update_side_file(self.out_dir / side_files[key], self.key_of(row), value)
        missing = unexplained_nulls(row)
        if missing:
            raise AssertionError(f"row for {self.key_of(row)} has null columns without a reason: {missing}")
        with open(self.jsonl, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.write_tables()

    @staticmethod
    def _update_side_file(path: Path, key: str, value) -> None:
        document = json.loads(path.read_text()) if path.exists() else {}
        document[key] = value
        write_atomically(path, json.dumps(document))

    def write_tables(self) -> None:
        rows = self.rows()
        document = {"schema_version": SCHEMA_VERSION, "run": getattr(self, "run_config", None),
                    "environment": getattr(self, "environment", None), "rows": rows}
        write_atomically(self.json, json.dumps(document, indent=2))
        write_atomically(self.csv, rows_to_frame(rows).to_csv(index=False))


def rows_to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(CONTRACT_COLUMNS))
    frame["null_reasons"] = frame["null_reasons"].map(lambda reasons: json.dumps(reasons or {}, sort_keys=True))
    return frame


def load_results(path: str | Path) -> pd.DataFrame:
    """Results as a DataFrame, from an output folder, a results.json or a results.csv."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise CadbenchError(f"no results at {path}")
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
        frame["null_reasons"] = frame["null_reasons"].map(json.loads)
        return frame
    try:
        document = json.loads(path.read_text())
        rows = document["rows"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CadbenchError(f"{path} is not a cadbench results file") from None
    frame = pd.DataFrame(rows, columns=list(CONTRACT_COLUMNS))
    return frame


def write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
