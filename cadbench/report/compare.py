"""Per-cell differences between two result sets (`cadbench compare A B`)."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pandas as pd

from cadbench.files import write_atomically
from cadbench.harness.results.documents import load_results
from cadbench.vocabulary.cell import Cell

COMPARED = ["status", "peak_memory_bytes", "memory_source", "throughput_img_s"]
GB = 1e9


def compare_results(first: str | Path, second: str | Path) -> pd.DataFrame:
    """One line per cell of either result set (matched by cell key), A's figures beside B's."""
    identity = list(Cell.key_columns())
    a, b = (_with_key(load_results(path, role)) for path, role in ((first, "A:"), (second, "B:")))
    merged = a[["cell", *identity, *COMPARED]].merge(b[["cell", *identity, *COMPARED]], on="cell", how="outer",
                                                     suffixes=("_a", "_b"), indicator=True)
    # a cell's identity columns, from whichever side has it
    table = pd.DataFrame({column: merged[f"{column}_a"].combine_first(merged[f"{column}_b"]) for column in identity})
    for column in identity:  # the outer merge made integers floats where one side lacks a cell: "batch 1", not "1.0"
        if pd.api.types.is_integer_dtype(a[column]) and pd.api.types.is_integer_dtype(b[column]):
            table[column] = table[column].astype(a[column].dtype)
    table["status"] = [f"{x}" if x == y else f"{_text(x)} → {_text(y)}"
                       for x, y in zip(merged["status_a"], merged["status_b"])]
    table["peak A (GB)"] = merged["peak_memory_bytes_a"] / GB
    table["peak B (GB)"] = merged["peak_memory_bytes_b"] / GB
    table["memory change"] = (merged["peak_memory_bytes_b"] / merged["peak_memory_bytes_a"] - 1) * 100
    table["img/s A"] = merged["throughput_img_s_a"]
    table["img/s B"] = merged["throughput_img_s_b"]
    table["sources"] = [f"{_text(x)} / {_text(y)}" for x, y in zip(merged["memory_source_a"], merged["memory_source_b"])]
    table["only in"] = merged["_merge"].map({"left_only": "A", "right_only": "B", "both": ""})
    return table


def _with_key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(cell=[Cell.key_of(row) for _, row in frame.iterrows()])


def _text(value) -> str:
    return "—" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.copy()
    for column in ("peak A (GB)", "peak B (GB)", "img/s A", "img/s B"):
        shown[column] = shown[column].map(lambda v: "—" if pd.isna(v) else f"{v:.2f}")
    shown["memory change"] = shown["memory change"].map(lambda v: "—" if pd.isna(v) else f"{v:+.1f}%")
    return shown


def write_compare_html(table: pd.DataFrame, first: str, second: str, target: Path) -> Path:
    template = jinja2.Environment(autoescape=True).from_string(
        "<!doctype html><html><head><meta charset='utf-8'><title>cadbench compare</title><style>"
        "body{font:14px system-ui,sans-serif;margin:24px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px}</style></head><body>"
        "<h1>cadbench compare</h1><p>A = {{ first }}<br>B = {{ second }}</p>"
        "<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>"
        "{% for row in rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>"
        "</body></html>")
    shown = format_table(table)
    write_atomically(target, template.render(first=first, second=second, columns=list(shown.columns),
                                             rows=shown.astype(str).values.tolist()))
    return target
