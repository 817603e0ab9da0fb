"""The grid, the result rows and their files, and the comparison table — without running any cell."""

import json

import pandas as pd
import pytest

from cadbench.errors import CadbenchError
from cadbench.harness.grid import Cell, expand_grid
from cadbench.harness.results import CONTRACT_COLUMNS, ResultStore, explain_nulls, load_results, new_row
from cadbench.report.terminal import comparison_table


def test_grid_is_every_combination_once_and_validated():
    cells = expand_grid(["cad", "sam_adapter"], ["vit_b", "vit_h"], [1, 2, 2], ["fp32", "bf16"])
    assert len(cells) == 2 * 2 * 2 * 2 and len(set(cells)) == len(cells)
    assert cells[0] == Cell("cad", "vit_b", 1, "fp32")
    with pytest.raises(CadbenchError, match="batch size must be a positive integer, got -1"):
        expand_grid(["cad"], ["vit_b"], [-1])


def _row(method, batch_size=1, status="ok", peak=None):
    row = new_row({"method": method, "backbone": "vit_b", "test_scale": False, "batch_size": batch_size,
                   "precision": "fp32"}, {"torch_version": "x"})
    row.update(status=status, peak_memory_bytes=peak)
    return explain_nulls(row, {"*": "not measured in this test"})


def test_rows_persist_atomically_and_reload(tmp_path):
    store = ResultStore(tmp_path / "out")
    store.open({"mode": "estimate"}, {"torch_version": "x"})
    store.append(_row("cad", peak=10))
    store.append(_row("sam_adapter", status="error"))
    with open(store.jsonl, "a") as handle:
        handle.write('{"method": "cad", "backb')  # a write torn by a kill
    assert [row["method"] for row in store.rows()] == ["cad", "sam_adapter"]
    assert store.finished_keys() == {"cad/vit_b/1/fp32"}  # error cells are retried on resume
    store.write_tables()
    frame = load_results(tmp_path / "out")
    assert list(frame.columns) == list(CONTRACT_COLUMNS)
    assert list(frame["peak_memory_bytes"].astype("Int64")) == [10, pd.NA]
    csv = load_results(tmp_path / "out" / "results.csv")
    assert csv["null_reasons"][1]["peak_memory_bytes"] == "not measured in this test"
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left behind


def test_a_null_without_a_reason_is_refused(tmp_path):
    store = ResultStore(tmp_path)
    store.open({}, {})
    row = new_row({"method": "cad", "backbone": "vit_b", "test_scale": False, "batch_size": 1,
                   "precision": "fp32"}, {})
    row["status"] = "ok"
    with pytest.raises(AssertionError, match="null columns without a reason"):
        store.append(row)


def test_comparison_table_shows_ratios_to_the_baseline_and_oom():
    rows = pd.DataFrame([_row("sam_adapter", peak=40 * 10**9), _row("cad", peak=10 * 10**9),
                         _row("decoder_only", status="oom")])
    table = comparison_table(rows, "sam_adapter")
    line = table.iloc[0]
    assert line["cad"] == "10.00 GB (0.25×)"
    assert line["sam_adapter"] == "40.00 GB (1.00×)"
    assert line["decoder_only"] == "OOM"


def test_load_results_refuses_other_files(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CadbenchError, match="not a cadbench results file"):
        load_results(tmp_path)
    with pytest.raises(CadbenchError, match="no results at"):
        load_results(tmp_path / "missing")


def test_comparison_table_gives_a_method_with_options_its_own_labelled_column():
    rows = pd.DataFrame([_row("sam_adapter", peak=40 * 10**9), _row("lora", peak=20 * 10**9),
                         {**_row("lora", peak=30 * 10**9), "method_options": "rank=16"}])
    line = comparison_table(rows, "sam_adapter").iloc[0]
    assert line["lora"] == "20.00 GB (0.50×)" and line["lora (rank 16)"] == "30.00 GB (0.75×)"
    assert comparison_table(rows, "lora (rank 16)").iloc[0]["lora"] == "20.00 GB (0.67×)"
