"""Result rows, the result folder that keeps them, and the one reader of result documents.

A row per cell; columns that cannot be filled are null and `null_reasons` says why (never a zero standing in for
"unknown", and never a NaN: a non-finite number becomes null with its reason).

The result folder (`--out`) and its store, `ResultStore`:

    store = ResultStore(out)                 # nothing touched yet
    with store.open(run_config, environment):  # lock the folder, check run.json, repair the journal's torn tail
        store.finished_keys()                # keys of the cells already finished (ok or oom; errors are retried)
        store.append(row)                    # persist one finished cell: journal first, then the derived files
        store.rows()                         # the latest row of each cell, in the order cells first appeared
    # leaving the block (or store.close()) releases the folder

* `results.jsonl`, the journal (see `journal`), is the source of truth: a row is fsynced there before anything
  else is written, with its side data (`_timeline`, `_loss_curve`) on the same line.
* `results.json` and `results.csv` (the table), `timelines.json` and `loss_curves.json` (side data for the charts,
  keyed by cell) are derived from it and rewritten atomically after each row. Any of them may fail to be written or
  be found damaged: that costs no row. A damaged one is rebuilt from the journal when the folder is opened; one that
  cannot be written gets a one-line warning and the run goes on.
* `run.json` holds the settings the folder was measured with; a run with other settings is refused. An unreadable
  run.json is restored from results.json when that recorded them, and is otherwise a one-line error.
* One run at a time: `open` takes an exclusive lock on the folder for as long as the store is open (see
  `folder_lock`). The process holding it is the only writer of the folder.

`read_results_document(path)` reads a result set (a folder, a results.json, a results.csv, or a baseline) for
`check`, `compare`, `report` and `load_results`, checking its schema version and the columns its rows need.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from cadbench.errors import CadbenchError
from cadbench.harness.files import plain_scalar, strict_json, warn, write_atomically
from cadbench.harness.folder_lock import FolderLock
from cadbench.harness.journal import append_line, read_journal, rewrite_repaired
from cadbench.vocabulary.cell import Cell

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error", "not_applicable")
# error cells are retried on resume; not_applicable: a lever of the cell cannot apply to its method (the row's
# `error` says why), decided before anything runs, so there is nothing to retry
FINISHED_STATUSES = ("ok", "oom", "not_applicable")

# Columns every row has after its identity; those that may be null need a reason in `null_reasons` when they are.
MEASURED_COLUMNS = (
    "status", "error",
    "peak_memory_bytes", "memory_source", "reserved_memory_bytes", "nvml_process_memory_bytes",
    "nvml_process_peak_bytes", "fragmentation_ratio", "oom_capacity_bytes", "alloc_conf",
    "device_total_memory_bytes",
    "throughput_img_s", "throughput_source", "step_time_median_s", "step_time_p90_s",
    "step_time_noisy", "step_time_retimed",  # p90 over 2x the median (measure/timing.py); CPU cells timed again once
    "timed_steps", "warmup_steps",
    "flops_per_step",
    "breakdown_parameters_bytes", "breakdown_gradients_bytes", "breakdown_optimizer_states_bytes",
    "breakdown_activations_bytes", "breakdown_temporaries_bytes",
    "iou", "dice", "s_measure", "mean_e_measure", "weighted_f_measure", "mae", "ber", "quality_dataset",
    "train_steps", "protocol", "epochs", "dataset_split", "empty_train_masks", "empty_test_masks",
    "mask_grey_values", "saved_weights", "saved_weights_sha256", "trainable_params", "total_params", "weights", "device",
    "gpu_index", "slurm_job_id", "slurm_state", "slurm_log",  # where the cell ran (see harness/launchers)
    "gpu_name", "driver_version", "cuda_version", "torch_version", "segment_anything_version", "cadbench_version",
    "git_commit", "null_reasons",
)


def identity_columns() -> tuple[str, ...]:
    """The cell's columns (cadbench.vocabulary.cell.Cell: its fields and each declared lever), then test_scale."""
    return (*Cell.key_columns(), "test_scale")


def contract_columns() -> tuple[str, ...]:
    """Every column of a row, in order: the identity (which grows with each declared lever), then the rest."""
    return (*identity_columns(), *MEASURED_COLUMNS)


def never_null() -> tuple[str, ...]:
    return (*identity_columns(), "status", "null_reasons")


MEMORY_SOURCES = ("cuda", "estimated", "cpu")
# What any reader needs of a row: the cell's identity and how it ended.
ROW_REQUIRED_COLUMNS = (*Cell.positional_columns(), "status")
# Side data: a row's key starting with '_' -> the file that keeps it beside the table, keyed by cell.
SIDE_FILES = {"_timeline": "timelines.json", "_loss_curve": "loss_curves.json"}


def new_row(cell: dict, environment: dict) -> dict:
    """A row with every contract column present, identity and environment filled in, the rest null."""
    row = {column: None for column in contract_columns()}
    row.update(cell)
    for column in ("gpu_name", "driver_version", "cuda_version", "torch_version", "segment_anything_version",
                   "cadbench_version", "git_commit"):
        row[column] = environment.get(column)
    row["null_reasons"] = {}
    return row


def explain_nulls(row: dict, reasons: dict[str, str]) -> dict:
    """Record why columns are null. `reasons` maps a column (or a prefix ending in '*') to its reason."""
    for column in contract_columns():
        if row.get(column) is not None or column in never_null() or column in row["null_reasons"]:
            continue
        for pattern, reason in reasons.items():
            if column == pattern or (pattern.endswith("*") and column.startswith(pattern[:-1])):
                row["null_reasons"][column] = reason
                break
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


class ResultStore:
    """The result files of one output folder; rows are keyed by `cell_type`'s fields (see `Cell.key_of`). See the
    module docstring for the API and the guarantees."""

    def __init__(self, out_dir: str | Path, cell_type: type[Cell] = Cell) -> None:
        self.out_dir = Path(out_dir)
        self.cell_type = cell_type
        self.key_of = cell_type.key_of
        self.jsonl = self.out_dir / "results.jsonl"
        self.json = self.out_dir / "results.json"
        self.csv = self.out_dir / "results.csv"
        self.run_file = self.out_dir / "run.json"
        self.run_config: dict | None = None
        self.environment: dict | None = None
        self._lock = FolderLock(self.out_dir)
        self._latest: dict[str, dict] | None = None  # key -> latest row, while open
        self._side: dict[str, dict[str, Any]] = {kind: {} for kind in SIDE_FILES}
        self._warned: set[str] = set()

    # -- opening and closing ---------------------------------------------------------------------------------------
    def open(self, run_config: dict, environment: dict) -> "ResultStore":
        """Lock the folder (creating it), repair the journal's torn tail, check or write run.json and rebuild the
        derived files. Raises CadbenchError (one line) when the folder is in use, unwritable, measured with other
        settings, or holds a journal line that is not a row; the folder is then left as it was."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
            with tempfile.NamedTemporaryFile(dir=self.out_dir, prefix=".write-check-"):
                pass
        except OSError as exc:
            self._lock.release()
            raise CadbenchError(f"--out {self.out_dir} is not writable: {exc.strerror or exc}") from None
        try:
            latest, side = self._load_journal(repair=True)
            self._check_run_file(run_config, has_rows=bool(latest))
            write_atomically(self.run_file, strict_json({"config": run_config, "environment": environment},
                                                        indent=2))
        except BaseException:
            self._lock.release()
            raise
        self.run_config, self.environment = run_config, environment
        self._latest = latest
        self._side = {kind: {**self._side_file_entries(kind), **side[kind]} for kind in SIDE_FILES}
        if latest:
            self._write_derived([kind for kind in SIDE_FILES if self._side[kind]])
        return self

    def close(self) -> None:
        """Release the folder. The store can still be read; appending needs `open` again."""
        self._latest = None
        self._lock.release()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """The latest row of each cell, in the order cells first appeared (read from the journal when not open)."""
        latest = self._latest if self._latest is not None else self._load_journal(repair=False)[0]
        return list(latest.values())

    def rows_with_side_data(self) -> list[dict]:
        """The latest row of each cell with its side data (`_timeline`, `_loss_curve`) as the journal holds them,
        read without the lock (for `merge`, which copies rows into another folder)."""
        latest, side = self._load_journal(repair=False)
        return [{**row, **{kind: side[kind][key] for kind in SIDE_FILES if key in side[kind]}}
                for key, row in latest.items()]

    def finished_keys(self) -> set[str]:
        return {self.key_of(row) for row in self.rows() if row["status"] in FINISHED_STATUSES}

    # -- writing ---------------------------------------------------------------------------------------------------
    def append(self, row: dict) -> None:
        """Persist a finished cell: the row (and its side data, keys starting with '_': `_timeline`, live memory
        over one step; `_loss_curve`, the fine-tuning losses) is fsynced to the journal first; then the derived
        files are rewritten, each of which may fail with a warning without costing the row."""
        if self._latest is None:
            raise ValueError("ResultStore.append needs an open store (store.open(...))")
        row = finite_row(row)
        side = {kind: row.pop(kind) for kind in [key for key in row if key.startswith("_")]}
        missing = unexplained_nulls(row)
        if missing:
            raise AssertionError(f"row for {self.key_of(row)} has null columns without a reason: {missing}")
        kept = {kind: value for kind, value in side.items() if kind in SIDE_FILES and value is not None}
        try:
            fragment = append_line(self.jsonl, strict_json({**row, **kept}))
        except OSError as exc:
            raise CadbenchError(f"cannot append the row of {self.key_of(row)} to {self.jsonl}: "
                                f"{exc.strerror or exc}; the rows before it are kept there") from None
        if fragment:
            warn(f"{self.jsonl} ended in a line cut short ({len(fragment)} characters, no whole row); cut it off "
                 f"before appending")
        key = self.key_of(row)
        self._latest[key] = row  # a re-measured cell keeps its place
        for kind, value in kept.items():
            self._side[kind][key] = value
        self._write_derived(kept)

    def write_tables(self) -> None:
        """Rewrite results.json and results.csv from the rows."""
        self._write_derived(())

    def _write_derived(self, side_kinds: Iterable[str]) -> None:
        rows = self.rows()
        document = {"schema_version": SCHEMA_VERSION, "run": self.run_config, "environment": self.environment,
                    "rows": rows}
        self._write_derived_file(self.json, lambda: strict_json(document, indent=2))
        self._write_derived_file(self.csv, lambda: rows_to_frame(rows).to_csv(index=False))
        for kind in side_kinds:
            self._write_derived_file(self.out_dir / SIDE_FILES[kind], lambda kind=kind: strict_json(self._side[kind]))

    def _write_derived_file(self, path: Path, render) -> None:
        try:
            write_atomically(path, render())
        except (CadbenchError, OSError, ValueError) as exc:
            if path.name not in self._warned:
                self._warned.add(path.name)
                warn(f"{exc}; the rows are safe in {self.jsonl.name}, and {path.name} is rebuilt from it when this "
                     f"--out is next resumed")

    # -- the journal and run.json ---------------------------------------------------------------------------------
    def _load_journal(self, repair: bool) -> tuple[dict[str, dict], dict[str, dict[str, Any]]]:
        """The latest row of each cell and its side data. `repair` (only under the lock) cuts off a torn tail."""
        scan = read_journal(self.jsonl, lambda value: row_problem(value, self.cell_type))
        if scan.problems:
            number, problem = scan.problems[0]
            more = f" (and {len(scan.problems) - 1} more lines)" if len(scan.problems) > 1 else ""
            raise CadbenchError(f"{self.jsonl} line {number}: {problem}{more}; cadbench only appends whole rows, "
                                f"so this line was written by something else: fix or delete it, or use another --out")
        if repair and scan.needs_repair:
            rewrite_repaired(self.jsonl, scan, write_atomically)
            for number in scan.recovered:
                warn(f"{self.jsonl} line {number}: a row followed the fragment of a write cut short (as an older "
                     f"cadbench left it); kept the row, removed the fragment")
            if scan.torn_tail and not scan.tail_is_row:
                warn(f"{self.jsonl} ended in a line cut short by an interrupted write ({len(scan.torn_tail)} "
                     f"characters, no whole row); removed it, so that cell is measured again")
        latest: dict[str, dict] = {}
        side: dict[str, dict[str, Any]] = {kind: {} for kind in SIDE_FILES}
        for entry in scan.entries:
            row = finite_row(entry.row)
            key = self.key_of(row)
            for kind in SIDE_FILES:
                if row.get(kind) is not None:
                    side[kind][key] = row[kind]
            latest[key] = {column: value for column, value in row.items() if not column.startswith("_")}
        return latest, side

    def _check_run_file(self, run_config: dict, has_rows: bool) -> None:
        """Refuse to resume a folder measured with other settings."""
        if not self.run_file.exists():
            return
        previous = _read_run_config(self.run_file)
        if previous is None:
            if not has_rows:
                warn(f"{self.run_file} is unreadable; the folder holds no rows yet, so it is rewritten")
                return
            previous = _run_config_from_results(self.json)
            if previous is None:
                raise CadbenchError(
                    f"{self.run_file} is unreadable, so the rows in {self.out_dir} cannot be checked against this "
                    f"run's settings; restore it, delete it to resume regardless, or use another --out")
            warn(f"{self.run_file} was unreadable; restored the settings it held from {self.json.name}")
        differing = sorted(key for key in set(previous) | set(run_config) if previous.get(key) != run_config.get(key))
        if differing:
            raise CadbenchError(
                f"--out {self.out_dir} holds results measured with different settings ({', '.join(differing)}); "
                f"use another --out or the same settings to resume")

    def _side_file_entries(self, kind: str) -> dict[str, Any]:
        """What a side file holds now (entries of rows journalled before side data went into the journal); a
        damaged file is set aside and rebuilt from the journal."""
        path = self.out_dir / SIDE_FILES[kind]
        if not path.exists():
            return {}
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(document, dict):
                return document
        except (OSError, UnicodeDecodeError, ValueError):
            pass
        damaged = path.with_name(path.name + ".damaged")
        try:
            os.replace(path, damaged)
            kept = f"; the damaged file is kept as {damaged.name}"
        except OSError:
            kept = ""
        warn(f"{path} was damaged (not a JSON object); rebuilt from {self.jsonl.name}{kept}")
        return {}


def _read_run_config(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    config = document.get("config") if isinstance(document, dict) else None
    return config if isinstance(config, dict) else None


def _run_config_from_results(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    config = document.get("run") if isinstance(document, dict) else None
    return config if isinstance(config, dict) else None


# -- reading result documents ----------------------------------------------------------------------------------------
def read_results_document(path: str | Path, role: str = "results",
                          required: Iterable[str] = ROW_REQUIRED_COLUMNS, allow_csv: bool = True) -> dict:
    """A result set as {"schema_version", "run", "environment", "rows", "path"}, from an output folder (its
    results.json), a results.json or baseline, or (when `allow_csv`) a results.csv, which carries no schema
    version: its columns are checked instead. Every row must have the `required` columns. Raises CadbenchError
    naming `role` and the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise CadbenchError(f"{role} {path} does not exist")
    if path.suffix.lower() == ".csv":
        if not allow_csv:
            raise CadbenchError(f"{role} {path}: give a results.json here (a CSV carries no schema version)")
        document = {"schema_version": SCHEMA_VERSION, "run": None, "environment": None,
                    "rows": _csv_rows(path, role)}
    else:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CadbenchError(f"{role} {path} is not readable JSON: {type(exc).__name__}") from None
        versioned = isinstance(document, dict) and "schema_version" in document
        if not versioned and not (isinstance(document, dict) and isinstance(document.get("rows"), list)):
            raise CadbenchError(f"{role} {path} is not a cadbench results file (no 'rows' list)")
        if document.get("schema_version") != SCHEMA_VERSION:  # before the rows: another schema may keep them elsewhere
            raise CadbenchError(f"{role} {path} has schema version {document.get('schema_version')!r}; "
                                f"this cadbench reads version {SCHEMA_VERSION}")
        if not isinstance(document.get("rows"), list):
            raise CadbenchError(f"{role} {path} is not a cadbench results file (no 'rows' list)")
    required = tuple(required)
    for index, row in enumerate(document["rows"]):
        if not isinstance(row, dict):
            raise CadbenchError(f"{role} {path} row {index} is not an object")
        missing = [column for column in required if column not in row]
        if missing:
            raise CadbenchError(f"{role} {path} row {index} lacks {', '.join(missing)}")
    document["path"] = str(path)
    return document


def _csv_rows(path: Path, role: str) -> list[dict]:
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CadbenchError(f"{role} {path} is not a readable CSV: {type(exc).__name__}") from None
    if "null_reasons" not in frame.columns:
        raise CadbenchError(f"{role} {path} is not a cadbench results file (no null_reasons column)")
    rows = []
    for index, record in enumerate(frame.astype(object).where(frame.notna(), None).to_dict("records")):
        try:
            record["null_reasons"] = json.loads(record["null_reasons"] or "{}")
        except (TypeError, ValueError):
            raise CadbenchError(f"{role} {path} row {index} has unreadable null_reasons") from None
        rows.append(record)
    return rows


def rows_to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(contract_columns()))
    frame["null_reasons"] = frame["null_reasons"].map(lambda reasons: json.dumps(reasons or {}, sort_keys=True))
    return frame


def load_results(path: str | Path, role: str = "results") -> pd.DataFrame:
    """Results as a DataFrame, from an output folder, a results.json or a results.csv."""
    document = read_results_document(path, role)
    return pd.DataFrame(document["rows"], columns=list(contract_columns()))


__all__ = ["ResultStore", "SCHEMA_VERSION", "contract_columns", "explain_nulls", "finite_row", "load_results",
           "new_row", "read_results_document", "rows_to_frame", "unexplained_nulls", "write_atomically"]
