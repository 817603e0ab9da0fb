"""The comparison table printed at the end of a sweep: methods side by side, memory as a ratio of a baseline."""

from __future__ import annotations

import pandas as pd

from cadbench.harness.grid import Cell

GB = 10**9  # decimal gigabytes, as GPU capacities and the report state them
SHORT_NAMES = {"batch_size": "batch"}


def choose_baseline(methods: list[str], requested: str | None) -> str | None:
    if requested:
        return requested
    return "sam_adapter" if "sam_adapter" in methods else None


def comparison_table(rows: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """One line per cell identity without the method (backbone x batch size x precision x ...), one column per
    method: 'peak GB (ratio×)' or OOM/error."""
    if rows.empty:
        return pd.DataFrame()
    methods = list(dict.fromkeys(rows["method"]))
    identity = [column for column in Cell.key_columns() if column != "method" and column in rows]
    lines = []
    for values, group in rows.groupby(identity, sort=False, dropna=False):
        by_method = {row["method"]: row for _, row in group.iterrows()}
        base = by_method.get(baseline) if baseline else None
        base_peak = base["peak_memory_bytes"] if base is not None and base["status"] == "ok" else None
        line = {SHORT_NAMES.get(column, column): int(value) if column == "batch_size" else value
                for column, value in zip(identity, values)}
        for method in methods:
            line[method] = _memory_cell(by_method.get(method), base_peak)
        throughput = {m: r["throughput_img_s"] for m, r in by_method.items() if pd.notna(r["throughput_img_s"])}
        if throughput:
            line["img/s"] = ", ".join(f"{m} {v:.2f}" for m, v in throughput.items())
        lines.append(line)
    return pd.DataFrame(lines).fillna("—")  # e.g. no img/s for cells that were only estimated


def _memory_cell(row, base_peak) -> str:
    if row is None:
        return "—"
    if row["status"] == "oom":
        return "OOM"
    if row["status"] == "error":
        return "error"
    peak = row["peak_memory_bytes"]
    if pd.isna(peak):
        return "n/a"
    text = f"{peak / GB:.2f} GB"
    if base_peak and not pd.isna(base_peak):
        text += f" ({peak / base_peak:.2f}×)"
    return text
