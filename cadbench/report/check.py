"""The CI memory gate: did any cell's peak memory grow beyond the tolerance against a committed baseline?

Exit codes: 0 no regression; 1 a cell grew beyond the tolerance, or a baseline cell is missing or no longer
finishes; 2 bad input (unreadable or foreign file, other schema version, other memory source, no common cell).
The gate compares allocated (or estimated) peak memory, never reserved memory, which depends on the caching
allocator's history. Throughput is compared only when asked for and both sides ran on the same GPU model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cadbench.errors import CadbenchError
from cadbench.harness.results.documents import SCHEMA_VERSION, read_results_document
from cadbench.harness.results.rows import ROW_REQUIRED_COLUMNS, finite_row
from cadbench.vocabulary.cell import Cell

# What a baseline keeps of each row: the cell's identity, then what the gate compares.
BASELINE_COLUMNS = (*Cell.key_columns(), "status", "peak_memory_bytes", "memory_source", "throughput_img_s",
                    "throughput_source", "gpu_name", "trainable_params", "weights")
REQUIRED_COLUMNS = (*ROW_REQUIRED_COLUMNS, "peak_memory_bytes", "memory_source")


def parse_tolerance(text: str, flag: str = "--tolerance") -> float:
    """'5%' or '0.05' -> 0.05. NaN or infinity would let every regression through, a negative one fail every
    cell: both are refused."""
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise CadbenchError(f"{flag}: tolerance must look like 5% or 0.05, got {text!r}") from None
    if not math.isfinite(value):
        raise CadbenchError(f"{flag}: tolerance must be a finite number like 5% or 0.05, got {text!r}")
    if value < 0:
        raise CadbenchError(f"{flag}: tolerance must not be negative, got {text!r}")
    return value


def read_result_document(path: str | Path, role: str) -> dict:
    """A results.json (or the folder holding it) or a baseline, with the columns the gate compares in every row."""
    return read_results_document(path, role, required=REQUIRED_COLUMNS, allow_csv=False)


def checked_cells(baseline: dict) -> int:
    """How many baseline cells the gate compares (those that finished ok); none is an error, not a pass."""
    checked = sum(1 for row in baseline["rows"] if row["status"] == "ok")
    if not checked:
        what = "no rows" if not baseline["rows"] else "no cell with status ok"
        raise CadbenchError(f"baseline {baseline['path']} holds {what}: no cell that finished to compare against, "
                            f"so the gate would pass anything; rewrite it with `cadbench baseline update`")
    return checked


@dataclass
class Finding:
    key: str
    problem: str  # "grew", "missing", "not ok", "slower"
    old: float | None = None
    new: float | None = None

    def describe(self) -> str:
        if self.problem == "grew":
            return (f"{self.key}: peak memory {_gib(self.old)} -> {_gib(self.new)} "
                    f"({(self.new / self.old - 1) * 100:+.1f}%)")
        if self.problem == "slower":
            return f"{self.key}: throughput {self.old:.2f} -> {self.new:.2f} img/s ({(self.new / self.old - 1) * 100:+.1f}%)"
        return f"{self.key}: {self.problem}"


def compare(results: dict, baseline: dict, tolerance: float, throughput_tolerance: float | None = None,
            cell_type: type[Cell] = Cell) -> list[Finding]:
    """Findings for every ok baseline cell that regressed; cells are matched by `cell_type`'s key."""
    current = {cell_type.key_of(row): row for row in results["rows"]}
    reference = {cell_type.key_of(row): row for row in baseline["rows"] if row["status"] == "ok"}
    if reference and not set(reference) & set(current):
        raise CadbenchError(f"results {results['path']} and baseline {baseline['path']} have no cell in common "
                            f"(different grid)")
    findings = []
    for key, old in reference.items():
        new = current.get(key)
        if new is None:
            findings.append(Finding(key, "missing from the results"))
            continue
        if new["memory_source"] != old["memory_source"] and new["status"] == "ok":
            raise CadbenchError(f"{key}: memory source {new['memory_source']!r} in the results but "
                                f"{old['memory_source']!r} in the baseline; compare like with like")
        if new["status"] != "ok":
            findings.append(Finding(key, f"was ok in the baseline, now {new['status']}"
                                         + (f" ({new.get('error')})" if new.get("error") else "")))
            continue
        if new["peak_memory_bytes"] is None or old["peak_memory_bytes"] is None:
            side = "results" if new["peak_memory_bytes"] is None else "baseline"
            findings.append(Finding(key, f"ok, but the {side} records no peak memory to compare"))
            continue
        if new["peak_memory_bytes"] > old["peak_memory_bytes"] * (1 + tolerance):
            findings.append(Finding(key, "grew", old["peak_memory_bytes"], new["peak_memory_bytes"]))
        if throughput_tolerance is not None and _same_gpu_throughput(old, new):
            if new["throughput_img_s"] < old["throughput_img_s"] * (1 - throughput_tolerance):
                findings.append(Finding(key, "slower", old["throughput_img_s"], new["throughput_img_s"]))
    return findings


def _same_gpu_throughput(old: dict, new: dict) -> bool:
    return (old.get("throughput_source") == new.get("throughput_source") == "cuda"
            and old.get("gpu_name") and old.get("gpu_name") == new.get("gpu_name")
            and old.get("throughput_img_s") and new.get("throughput_img_s"))


def baseline_document(results: dict) -> dict:
    """What a baseline keeps of a result set: identity, status, memory and throughput of each cell."""
    return {"schema_version": SCHEMA_VERSION, "environment": results.get("environment"), "run": results.get("run"),
            "rows": [{column: row.get(column) for column in BASELINE_COLUMNS}
                     for row in map(finite_row, results["rows"])]}


def _gib(value: float) -> str:
    return f"{value / 1024**3:.3f} GiB"
