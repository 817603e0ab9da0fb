"""`cadbench merge OUT DIR [DIR ...]`: one folder from several, refusing folders measured with other settings and
two different finished rows for one cell, before the output folder is touched. (A merge of a Slurm run and a local
run that equals a full run is in test_launchers_slurm.py.)"""

import json
import shutil
from pathlib import Path

import pytest
from cadbench_in_process import cadbench_main as cadbench


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("measured") / "out"
    result = cadbench("estimate", "--methods", "decoder_only,cad", "--backbone", "test_scale", "--batch-sizes", "1",
                      "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def copy_with(measured: Path, target: Path, edit_row=None, edit_config=None) -> Path:
    shutil.copytree(measured, target)
    if edit_row:
        lines = [json.loads(line) for line in (target / "results.jsonl").read_text().splitlines()]
        (target / "results.jsonl").write_text("".join(json.dumps(edit_row(row)) + "\n" for row in lines))
    if edit_config:
        document = json.loads((target / "run.json").read_text())
        edit_config(document["config"])
        (target / "run.json").write_text(json.dumps(document))
    return target


def journal_keys(out: Path) -> list[str]:
    return [f"{row['method']}/{row['batch_size']}" for row in map(json.loads, (out / "results.jsonl").open())]


def test_folders_measured_with_other_settings_are_refused_naming_the_setting(measured, tmp_path):
    other = copy_with(measured, tmp_path / "other", edit_config=lambda config: config.update(seed=7))
    result = cadbench("merge", str(tmp_path / "merged"), str(measured), str(other))
    assert result.returncode == 2
    assert result.stderr == (f"cadbench: error: {other} was measured with different settings than {measured} "
                             f"(seed); merge only folders measured alike\n")
    assert not (tmp_path / "merged").exists()


def test_two_different_finished_rows_for_one_cell_are_refused(measured, tmp_path):
    def bigger(row):
        if row["method"] == "cad":
            row["peak_memory_bytes"] += 512
        return row

    other = copy_with(measured, tmp_path / "other", edit_row=bigger)
    result = cadbench("merge", str(tmp_path / "merged"), str(measured), str(other))
    assert result.returncode == 2
    assert result.stderr == (f"cadbench: error: cell cad/test_scale/1/fp32 has different rows in {measured} and "
                             f"{other}; merge keeps one row per cell: remove it from one folder\n")
    assert not (tmp_path / "merged").exists()


def test_identical_rows_count_once_and_a_finished_row_stands_over_an_error_row(measured, tmp_path):
    def failed(row):
        if row["method"] == "cad":
            row.update(status="error", error="RuntimeError: boom", peak_memory_bytes=None)
            row["null_reasons"]["peak_memory_bytes"] = "cell did not finish"
        return row

    errored = copy_with(measured, tmp_path / "errored", edit_row=failed)
    merged = tmp_path / "merged"
    result = cadbench("merge", str(merged), str(errored), str(measured), str(measured))
    assert result.returncode == 0, result.stderr
    assert journal_keys(merged) == ["decoder_only/1", "cad/1"]
    rows = {row["method"]: row for row in json.loads((merged / "results.json").read_text())["rows"]}
    original = {row["method"]: row for row in json.loads((measured / "results.json").read_text())["rows"]}
    assert rows == original
    assert json.loads((merged / "run.json").read_text())["environment"]["merged_from"][0]["folder"] == str(errored)

    again = cadbench("merge", str(merged), str(measured))  # merging into a merged folder adds only what it lacks
    assert again.returncode == 0 and "(0 rows added)" in again.stdout
    assert journal_keys(merged) == ["decoder_only/1", "cad/1"]


def test_a_folder_that_is_not_a_result_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = cadbench("merge", str(tmp_path / "merged"), str(tmp_path / "empty"))
    assert result.returncode == 2
    assert result.stderr == f"cadbench: error: {tmp_path / 'empty'} is not a cadbench result folder (no run.json)\n"
