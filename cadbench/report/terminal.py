"""The comparison table printed at the end of a sweep: methods side by side, memory as a ratio of a baseline.

Methods are shown by their labels: a method with options is its own column, 'lora (rank 16)' beside 'lora', and so
is a method with memory levers, 'sam_adapter + checkpointed encoder' beside 'sam_adapter'.
"""

from __future__ import annotations

import pandas as pd

from cadbench.errors import CadbenchError
from cadbench.vocabulary.cell import Cell, lever_label
from cadbench.vocabulary.levers import declared_levers
from cadbench.vocabulary.method_spec import method_label, split_method_spec

GB = 10**9  # decimal gigabytes, as GPU capacities and the report state them
SHORT_NAMES = {"batch_size": "batch"}
LEVER_SEPARATOR = " + "
DEFAULT_BASELINE = "sam_adapter"


def method_columns() -> tuple[str, ...]:
    """What a method label is made of: the method spec (see Cell.method_label) and each declared lever (see
    lever_label)."""
    return ("method", "method_options", *(lever.name for lever in declared_levers()))


def method_labels(rows: pd.DataFrame) -> list[str]:
    """Each row's method label: 'lora (rank 16)', or the bare name at the method's defaults (and in rows written
    before methods had options), followed by its non-default levers: 'sam_adapter + checkpointed encoder'."""
    options = rows["method_options"] if "method_options" in rows else [""] * len(rows)
    labels = []
    for (_, row), option in zip(rows.iterrows(), options):
        label = method_label(row["method"], option if isinstance(option, str) else "")
        levers = lever_label(row)
        labels.append(f"{label}{LEVER_SEPARATOR}{levers}" if levers else label)
    return labels


def baseline_label(spec: str) -> str:
    """The label of the method spec a user names as baseline, canonical where the method is installed."""
    from cadbench.registry import parse_method_spec

    try:
        return parse_method_spec(spec).label
    except CadbenchError:  # a result file read where its method is not installed: take the text as written
        return method_label(*split_method_spec(spec))


def choose_baseline(labels: list[str], requested: str | None) -> str | None:
    """The baseline's label: the requested method spec's, else sam_adapter's when it was measured."""
    if requested:
        return baseline_label(requested)
    return DEFAULT_BASELINE if DEFAULT_BASELINE in labels else None


def comparison_table(rows: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """One line per cell identity without the method (backbone x batch size x precision x ...), one column per
    method label: 'peak GB (ratio×)' or OOM/error. `baseline` is a method label."""
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(method=method_labels(rows))
    methods = list(dict.fromkeys(rows["method"]))
    identity = [column for column in Cell.key_columns() if column not in method_columns() and column in rows]
    lines = []
    for values, group in rows.groupby(identity, sort=False, dropna=False):
        by_method = {row["method"]: row for _, row in group.iterrows()}
        base = by_method.get(baseline) if baseline else None
        base_peak = base["peak_memory_bytes"] if base is not None and base["status"] == "ok" else None
        line = {SHORT_NAMES.get(column, column): int(value) if column == "batch_size" else value
                for column, value in zip(identity, values)}
        for method in methods:
            line[method] = _memory_cell(by_method.get(method), base_peak)
        lines.append(line)
    return pd.DataFrame(lines).fillna("—")


def throughput_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Images/s, laid out like `comparison_table` (one column per method label), for the cells that were timed
    only; '—' where a method was not timed, and a timing whose steps were too uneven to trust marked 'noisy'
    (see `cadbench.measure.timing.NOISY_SPREAD`). Empty when no cell was timed."""
    if rows.empty or rows["throughput_img_s"].isna().all():
        return pd.DataFrame()
    rows = rows.assign(method=method_labels(rows))
    methods = list(dict.fromkeys(rows.loc[rows["throughput_img_s"].notna(), "method"]))
    identity = [column for column in Cell.key_columns() if column not in method_columns() and column in rows]
    lines = []
    for values, group in rows.groupby(identity, sort=False, dropna=False):
        timed = group[group["throughput_img_s"].notna()]
        if timed.empty:
            continue
        line = {SHORT_NAMES.get(column, column): int(value) if column == "batch_size" else value
                for column, value in zip(identity, values)}
        by_method = {row["method"]: row for _, row in timed.iterrows()}
        for method in methods:
            row = by_method.get(method)
            line[method] = "—" if row is None else f"{row['throughput_img_s']:.2f}" + (
                " noisy" if row.get("step_time_noisy") is True else "")
        lines.append(line)
    return pd.DataFrame(lines)


def to_text(table: pd.DataFrame) -> str:
    """A table as text no wider than the terminal (or $COLUMNS): pandas wraps columns that do not fit into further
    blocks. Off a terminal (a log) the lines are left whole."""
    import shutil

    width = shutil.get_terminal_size((0, 0)).columns
    return table.to_string(index=False, line_width=width or None)


def _memory_cell(row, base_peak) -> str:
    if row is None:
        return "—"
    if row["status"] == "oom":
        return "OOM"
    if row["status"] == "error":
        return "error"
    if row["status"] == "not_applicable":
        return "not applicable"
    peak = row["peak_memory_bytes"]
    if pd.isna(peak):
        return "n/a"
    text = f"{peak / GB:.2f} GB"
    if base_peak and not pd.isna(base_peak):
        text += f" ({peak / base_peak:.2f}×)"
    return text
