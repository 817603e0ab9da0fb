"""The estimator's measured error, read from reference GPU measurements (`reports/reference/<gpu>-<date>/`).

A reference folder is what `cadbench validate --reference` wrote on a real GPU: CUDA result rows, one per cell. For
each estimated row of a report, the error shown is that estimate against the CUDA measurement of the same cell
(`Cell.key_of`) on the reference GPU, estimate / max_memory_allocated - 1. It is computed from the estimate in the
report, not copied from the reference's own table, so it stays true when the estimator changes after the reference
was measured.

Which references: the newest of each GPU model; when the results name GPUs (an estimate made on a GPU machine),
only those models. A reference matching none of the report's estimated cells is not shown at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from cadbench.errors import CadbenchError
from cadbench.harness.results.documents import read_results_document
from cadbench.harness.results.rows import rows_to_frame
from cadbench.vocabulary.cell import Cell

DEFAULT_REFERENCE_ROOT = Path("reports") / "reference"


@dataclass(frozen=True)
class Reference:
    folder: Path
    gpu_name: str
    date: str  # YYYY-MM-DD, when it was measured
    commit: str | None  # the cadbench commit that measured it
    allocated: dict[str, int] = field(default_factory=dict)  # cell key -> max_memory_allocated (finished cells)
    out_of_memory: frozenset[str] = frozenset()  # cell keys that ran out of memory there

    @property
    def column(self) -> str:
        """The report's column title: the GPU model (one reference per model is shown; the note gives the date)."""
        return f"est. error on {self.gpu_name.removeprefix('NVIDIA ')}"

    def error_of(self, row: Mapping[str, Any]) -> str | None:
        """This estimated row's error against the reference as text: '+1.23%', or 'oom' when the cell ran out of
        memory there; None if the reference lacks the cell or the row is no finished estimate."""
        if row.get("memory_source") != "estimated" or row.get("status") != "ok" or pd.isna(row["peak_memory_bytes"]):
            return None
        key = Cell.key_of(row)
        if key in self.allocated:
            return f"{row['peak_memory_bytes'] / self.allocated[key] - 1:+.2%}"
        return "oom" if key in self.out_of_memory else None


def load_references(root: str | Path = DEFAULT_REFERENCE_ROOT) -> list[Reference]:
    """Every readable reference folder under `root` (none if it does not exist)."""
    root = Path(root)
    if not root.is_dir():
        return []
    references = []
    for folder in sorted(path for path in root.iterdir() if (path / "results.json").is_file()):
        try:
            document = read_results_document(folder, "reference")
        except CadbenchError:
            continue  # not a result folder of this schema: no reference, and no reason to fail a report
        rows, environment = rows_to_frame(document["rows"]), document.get("environment") or {}
        cuda = rows[rows["memory_source"] == "cuda"]
        gpu = environment.get("gpu_name") or next(iter(cuda["gpu_name"].dropna()), None)
        if gpu is None:
            continue
        finished = cuda[(cuda["status"] == "ok") & cuda["peak_memory_bytes"].notna()]
        references.append(Reference(
            folder=folder, gpu_name=gpu, date=str(environment.get("timestamp") or "")[:10] or folder.name,
            commit=environment.get("git_commit"),
            allocated={Cell.key_of(row): int(row["peak_memory_bytes"]) for _, row in finished.iterrows()},
            out_of_memory=frozenset(Cell.key_of(row) for _, row in rows[rows["status"] == "oom"].iterrows())))
    return references


def choose_references(references: Iterable[Reference], rows: pd.DataFrame) -> list[Reference]:
    """The references to show beside `rows`: the newest per GPU model (of the models the rows name, if any), each
    matching at least one of the rows' estimates."""
    named = set(rows["gpu_name"].dropna()) if "gpu_name" in rows else set()
    newest: dict[str, Reference] = {}
    for reference in sorted(references, key=lambda reference: reference.date):
        if not named or reference.gpu_name in named:
            newest[reference.gpu_name] = reference
    records = rows.to_dict("records")
    return [reference for reference in newest.values()
            if any(reference.error_of(row) is not None for row in records)]
