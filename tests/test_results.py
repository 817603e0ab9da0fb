"""The grid, the result rows and their files, and the comparison table — without running any cell."""

import json

import pandas as pd
import pytest

from cadbench.errors import CadbenchError
from cadbench.harness.grid import expand_grid
from cadbench.harness.results.documents import load_results
from cadbench.harness.results.rows import contract_columns, explain_nulls, new_row
from cadbench.harness.results.store import ResultStore
from cadbench.report.terminal import comparison_table
from cadbench.vocabulary.cell import Cell


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
    store.close()
    frame = load_results(tmp_path / "out")
    assert list(frame.columns) == list(contract_columns())
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


def test_the_first_reason_that_names_a_null_column_explains_it_and_reasons_follow_the_columns_order():
    row = new_row({"method": "cad", "backbone": "vit_b", "test_scale": False, "batch_size": 1,
                   "precision": "fp32"}, {})
    row.update(status="ok", peak_memory_bytes=1)
    explain_nulls(row, {"step_time_p90_s": "the part's own reason", "peak_memory_bytes": "not null: unused"},
                  {"step_time_*": "the mode's reason", "*": "anything else"})
    reasons = row["null_reasons"]
    assert reasons["step_time_p90_s"] == "the part's own reason"
    assert reasons["step_time_median_s"] == "the mode's reason"
    assert "peak_memory_bytes" not in reasons and reasons["error"] == "anything else"
    assert list(reasons) == [column for column in contract_columns() if column in reasons]


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
    with pytest.raises(CadbenchError, match="does not exist"):
        load_results(tmp_path / "missing")


# -- the journal is the source of truth (issue 9) -------------------------------------------------------------------

def _lines(path):
    return path.read_text().splitlines()


def _strict(path):
    """The file parses as strict JSON (no NaN or Infinity tokens)."""
    def refuse(token):
        raise ValueError(f"{path.name}: non-standard JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_torn_last_line_is_cut_off_on_open_and_the_next_row_starts_a_line_of_its_own(tmp_path, capsys):
    store = ResultStore(tmp_path / "out")
    store.open({}, {})
    store.append(_row("cad", peak=10))
    store.close()
    with open(store.jsonl, "a") as handle:
        handle.write('{"method": "sam_adapter", "backb')  # the kill came mid-write
    store = ResultStore(tmp_path / "out")
    store.open({}, {})
    assert "results.jsonl" in capsys.readouterr().err  # one line saying what was cut off
    store.append(_row("sam_adapter", peak=20))
    store.close()
    assert [json.loads(line)["method"] for line in _lines(store.jsonl)] == ["cad", "sam_adapter"]
    assert [row["method"] for row in _strict(store.json)["rows"]] == ["cad", "sam_adapter"]


def test_a_fragment_left_in_the_journal_while_open_is_never_appended_to(tmp_path, capsys):
    store = ResultStore(tmp_path / "out")
    store.open({}, {})
    store.append(_row("cad", peak=10))
    with open(store.jsonl, "a") as handle:
        handle.write('{"method": "sam_ad')
    store.append(_row("decoder_only", peak=5))
    store.close()
    assert [json.loads(line)["method"] for line in _lines(store.jsonl)] == ["cad", "decoder_only"]


def test_a_row_glued_onto_a_fragment_by_an_older_cadbench_is_recovered(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    whole = json.dumps(_row("cad", peak=10))
    (out / "results.jsonl").write_text('{"method": "sam_adapter", "backb' + whole + "\n")
    store = ResultStore(out)
    store.open({}, {})
    assert [row["method"] for row in store.rows()] == ["cad"]
    assert _lines(store.jsonl) == [whole]
    assert "line 1" in capsys.readouterr().err


@pytest.mark.parametrize("line, problem", [
    ('{"method": "cad", "backbone": "vit_b", "batch_size": 1, "precision": "fp32"}', "no 'status'"),
    ('[1, 2, 3]', "not a result row"),
    ('{"method": "cad", "backbone": "vit_b", "batch_size": 1, "precision": "fp32", "status": "great"}',
     "status 'great'"),
    ('this is not json', "not JSON"),
])
def test_a_journal_line_that_is_not_a_row_is_one_error_naming_the_file_and_line(tmp_path, line, problem):
    out = tmp_path / "out"
    out.mkdir()
    good = json.dumps(_row("cad", peak=10))
    (out / "results.jsonl").write_text(f"{good}\n{line}\n{good}\n")
    before = (out / "results.jsonl").read_text()
    with pytest.raises(CadbenchError) as error:
        ResultStore(out).open({}, {})
    message = str(error.value)
    assert "\n" not in message and f"{out / 'results.jsonl'} line 2" in message and problem in message
    assert (out / "results.jsonl").read_text() == before  # nothing repaired by guessing
    with pytest.raises(CadbenchError, match="line 2"):  # the same refusal again: it left no lock behind
        ResultStore(out).open({}, {})


def test_a_corrupt_side_file_is_rebuilt_from_the_journal_and_costs_no_row(tmp_path, capsys):
    store = ResultStore(tmp_path / "out")
    store.open({}, {})
    store.append({**_row("cad", peak=10), "_timeline": [["forward", 1], ["backward", 3]]})
    store.close()
    (tmp_path / "out" / "timelines.json").write_text("{broken")
    store = ResultStore(tmp_path / "out")
    store.open({}, {})
    store.append({**_row("sam_adapter", peak=20), "_timeline": [["forward", 2]]})
    store.close()
    assert set(_strict(tmp_path / "out" / "timelines.json")) == {"cad/vit_b/1/fp32", "sam_adapter/vit_b/1/fp32"}
    assert [row["method"] for row in _strict(store.json)["rows"]] == ["cad", "sam_adapter"]
    err = capsys.readouterr().err
    assert "timelines.json" in err and "rebuilt" in err and "Traceback" not in err


def test_a_side_file_that_cannot_be_written_warns_once_and_keeps_the_row(tmp_path, capsys):
    store = ResultStore(tmp_path / "out")
    store.open({}, {})
    (tmp_path / "out" / "loss_curves.json").mkdir()  # anything that makes the write fail
    store.append({**_row("cad", peak=10), "_loss_curve": [0.5, 0.4]})
    store.close()
    assert [json.loads(line)["method"] for line in _lines(store.jsonl)] == ["cad"]
    assert [row["method"] for row in _strict(store.json)["rows"]] == ["cad"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loss_curves.json" in err and "warning" in err


def test_an_unreadable_run_json_is_rebuilt_from_results_json(tmp_path, capsys):
    store = ResultStore(tmp_path / "out")
    store.open({"steps": 2}, {"torch_version": "x"})
    store.append(_row("cad", peak=10))
    store.close()
    store.run_file.write_text("{not json")
    with pytest.raises(CadbenchError, match=r"different settings \(steps\)"):
        ResultStore(tmp_path / "out").open({"steps": 3}, {})  # still checked against what results.json recorded
    assert "run.json" in capsys.readouterr().err
    ResultStore(tmp_path / "out").open({"steps": 2}, {})
    assert json.loads(store.run_file.read_text())["config"] == {"steps": 2}


def test_an_unreadable_run_json_without_results_json_is_one_line_error(tmp_path):
    store = ResultStore(tmp_path / "out")
    store.open({"steps": 2}, {})
    store.append(_row("cad", peak=10))
    store.close()
    store.run_file.write_text('{"no config": 1}')
    store.json.unlink(missing_ok=True)
    with pytest.raises(CadbenchError, match="run.json") as error:
        ResultStore(tmp_path / "out").open({"steps": 2}, {})
    assert "\n" not in str(error.value)


def test_non_finite_numbers_become_null_with_a_reason_and_every_file_is_strict_json(tmp_path):
    store = ResultStore(tmp_path / "out")
    store.open({}, {})
    row = _row("cad", peak=10)
    row.update(iou=float("nan"), throughput_img_s=float("inf"))
    row["null_reasons"].pop("iou", None)
    row["null_reasons"].pop("throughput_img_s", None)
    store.append({**row, "_loss_curve": [0.5, float("nan"), float("-inf")], "_timeline": [["forward", 1]]})
    store.close()
    for name in ("results.jsonl", "results.json", "loss_curves.json", "timelines.json", "run.json"):
        path = tmp_path / "out" / name
        documents = [_strict(path)] if name != "results.jsonl" else [json.loads(line) for line in _lines(path)]
        assert documents, name
    saved = _strict(store.json)["rows"][0]
    assert saved["iou"] is None and "nan" in saved["null_reasons"]["iou"]
    assert saved["throughput_img_s"] is None and "inf" in saved["null_reasons"]["throughput_img_s"]
    assert _strict(tmp_path / "out" / "loss_curves.json")["cad/vit_b/1/fp32"] == [0.5, None, None]
    assert load_results(store.csv)["null_reasons"][0]["iou"] == saved["null_reasons"]["iou"]


# -- one run per folder --------------------------------------------------------------------------------------------

LOCK_HOLDER = """
import sys, time
from cadbench.harness.results.store import ResultStore
store = ResultStore(sys.argv[1]).open({}, {})
print("locked", flush=True)
time.sleep(600)
"""


def _hold_lock(out):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_store_on_a_folder_in_use_is_refused_naming_the_folder_and_the_pid(tmp_path):
    out = tmp_path / "out"
    holder = _hold_lock(out)
    try:
        with pytest.raises(CadbenchError) as error:
            ResultStore(out).open({}, {})
        message = str(error.value)
        assert str(out) in message and f"PID {holder.pid}" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    out = tmp_path / "out"
    holder = _hold_lock(out)
    holder.kill()  # SIGKILL: no clean-up ran
    holder.wait()
    store = ResultStore(out)
    store.open({}, {})
    store.append(_row("cad", peak=10))
    store.close()
    assert not list(out.glob(".*"))  # a clean close leaves no lock file behind


def test_one_process_cannot_open_a_folder_twice_either(tmp_path):
    with ResultStore(tmp_path / "out").open({}, {}):
        with pytest.raises(CadbenchError, match="in use"):
            ResultStore(tmp_path / "out").open({}, {})
    ResultStore(tmp_path / "out").open({}, {}).close()


def test_one_reader_refuses_another_schema_version(tmp_path):
    store = ResultStore(tmp_path / "out")
    with store.open({}, {}):
        store.append(_row("cad", peak=10))
    document = json.loads(store.json.read_text())
    store.json.write_text(json.dumps({**document, "schema_version": 2}))
    with pytest.raises(CadbenchError, match="schema version 2; this cadbench reads version 1"):
        load_results(tmp_path / "out")


def test_comparison_table_gives_a_method_with_options_its_own_labelled_column():
    rows = pd.DataFrame([_row("sam_adapter", peak=40 * 10**9), _row("lora", peak=20 * 10**9),
                         {**_row("lora", peak=30 * 10**9), "method_options": "rank=16"}])
    line = comparison_table(rows, "sam_adapter").iloc[0]
    assert line["lora"] == "20.00 GB (0.50×)" and line["lora (rank 16)"] == "30.00 GB (0.75×)"
    assert comparison_table(rows, "lora (rank 16)").iloc[0]["lora"] == "20.00 GB (0.67×)"


@pytest.mark.parametrize("mode", ["cuda", "cpu", "estimate"])
def test_a_cell_that_did_not_finish_explains_its_memory_nulls_by_its_failure_not_by_its_mode(mode):
    from cadbench.harness.nulls import null_reasons
    from cadbench.harness.options import RunOptions

    row = {"status": "error", "error": "RuntimeError: CUDA error: an illegal memory access"}
    reasons = null_reasons(row, mode, RunOptions())
    for column in ("fragmentation_ratio", "peak_memory_bytes", "reserved_memory_bytes"):
        assert reasons[column] == "cell did not finish (error: RuntimeError: CUDA error: an illegal memory access)"
    assert null_reasons({"status": "ok", "error": None}, "cuda", RunOptions())["fragmentation_ratio"] == (
        "the step allocated no GPU memory")
