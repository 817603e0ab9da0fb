"""--prompts-per-image, a grid dimension (cadbench.vocabulary.prompts): its key, its columns, its refusals."""

import json

import pytest

from cadbench.errors import CadbenchError
from cadbench.harness.grid import expand_grid
from cadbench_in_process import cadbench_main
from cadbench.vocabulary.cell import Cell, cell_key


def test_the_default_keeps_todays_key_and_older_rows_read_as_the_default():
    cell = Cell("decoder_only", "vit_b", 4)
    assert cell.prompts_per_image == "image" and cell.key == "decoder_only/vit_b/4/fp32"
    older = {"method": "decoder_only", "backbone": "vit_b", "batch_size": 4, "precision": "fp32"}  # no such column
    assert cell_key(older) == cell.key and Cell.from_row(older) == cell


def test_a_number_of_objects_is_in_the_key_and_reads_back_from_text_and_csv_floats():
    cell = Cell("lora", "vit_b", 4, prompts_per_image=8, micro_batch=2)
    assert cell.key == "lora/vit_b/4/fp32/prompts_per_image=8/micro_batch=2"
    assert Cell("lora", "vit_b", 4, prompts_per_image="8", micro_batch=2) == cell
    row = {**cell.as_dict(), "prompts_per_image": 8.0}  # a CSV column with gaps reads as floats
    assert cell_key(row) == cell.key and Cell.from_row(row) == cell
    assert "8 objects per image" in cell.further_labels()


def test_the_grid_crosses_prompts_per_image():
    cells = expand_grid(["decoder_only"], ["test_scale"], [1], ["fp32"], prompts_per_image=["image", 1, "8"])
    assert [cell.prompts_per_image for cell in cells] == ["image", 1, 8]


@pytest.mark.parametrize("value", [0, 257, -3, "many", 2.5])
def test_a_number_outside_1_to_256_is_refused_naming_the_flag(value):
    with pytest.raises(CadbenchError, match="--prompts-per-image takes 'image' or an integer from 1 to 256"):
        Cell("decoder_only", "vit_b", 1, prompts_per_image=value)


@pytest.mark.parametrize("command", ["run", "estimate", "validate", "fit"])
@pytest.mark.parametrize("value", ["0", "257", "image,x"])
def test_the_command_line_refuses_a_bad_value_in_one_line_before_anything_runs(tmp_path, command, value):
    result = cadbench_main(command, "--methods", "decoder_only", "--backbone", "test_scale",
                           "--prompts-per-image", value, *(["--out", tmp_path / "out"] if command != "fit" else []))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--prompts-per-image" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_estimate_records_the_dimension_in_each_row(tmp_path):
    result = cadbench_main("estimate", "--methods", "decoder_only", "--backbone", "test_scale", "--batch-sizes", "1",
                           "--prompts-per-image", "image,3", "--out", tmp_path, "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [row["prompts_per_image"] for row in rows] == ["image", 3]
    assert [cell_key(row) for row in rows] == ["decoder_only/test_scale/1/fp32",
                                               "decoder_only/test_scale/1/fp32/prompts_per_image=3"]
    assert rows[1]["peak_memory_bytes"] > rows[0]["peak_memory_bytes"]
    assert "decoder_only + 3 objects per image" in result.stdout
