"""`cadbench validate`: the estimator against a real GPU, cell by cell (needs CUDA).

Each cell is measured on CUDA in a fresh process (`max_memory_allocated` after warm-up) and estimated by the
fake-tensor replay; the table gives the relative error of the estimate. Target: within 3% on every cell that fits.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from cadbench.errors import CadbenchError
from cadbench.harness.grid import Cell
from cadbench.harness.results import write_atomically

TARGET_ERROR = 0.03


def validate(methods, backbones, batch_sizes, precisions=("fp32",), out: str | Path | None = None,
             steps: int = 3, warmup: int = 2) -> pd.DataFrame:
    if not torch.cuda.is_available():
        raise CadbenchError("cadbench validate compares the estimator with CUDA measurements and needs a CUDA GPU")
    from cadbench.api import default_out_dir, run
    from cadbench.estimator import estimate_cell

    out = Path(out or default_out_dir())
    measured = run(methods=methods, backbones=backbones, batch_sizes=batch_sizes, precisions=precisions,
                   steps=steps, warmup=warmup, device="cuda", dataset=None, out=out, print_summary=False)
    lines = []
    for _, row in measured.iterrows():
        cell = Cell.from_row(row)
        estimate = estimate_cell(cell)
        line = {**cell.as_dict(), "status": row["status"],
                "cuda_allocated_bytes": row["peak_memory_bytes"], "estimated_bytes": estimate.peak_bytes}
        if row["status"] == "ok":
            line["error"] = estimate.peak_bytes / row["peak_memory_bytes"] - 1
        lines.append(line)
    table = pd.DataFrame(lines)
    write_atomically(out / "validation.csv", table.to_csv(index=False))
    return table


def format_validation(table: pd.DataFrame) -> str:
    shown = table.copy()
    shown["cuda GiB"] = shown["cuda_allocated_bytes"].map(lambda v: "—" if pd.isna(v) else f"{v / 1024**3:.3f}")
    shown["estimate GiB"] = shown["estimated_bytes"].map(lambda v: f"{v / 1024**3:.3f}")
    shown["error"] = shown.get("error", pd.Series(dtype=float)).map(lambda v: "—" if pd.isna(v) else f"{v:+.2%}")
    within = table.get("error", pd.Series(dtype=float)).dropna().abs() <= TARGET_ERROR
    columns = [*Cell.key_columns(), "status", "cuda GiB", "estimate GiB", "error"]
    return (shown[columns].to_string(index=False)
            + f"\n{int(within.sum())} of {len(within)} measured cells within ±{TARGET_ERROR:.0%}")
