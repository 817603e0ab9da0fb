"""The cell is the one definition of a measurement's identity: keys, key columns and validation derive from it."""

from dataclasses import dataclass

import pytest

from cadbench.cli import build_parser
from cadbench.commands.arguments import run_options
from cadbench.errors import CadbenchError
from cadbench.harness.grid import cell_label, expand_grid, make_cell
from cadbench.harness.options import DEFAULTS, RunOptions
from cadbench.harness.results.rows import contract_columns, explain_nulls, new_row
from cadbench.harness.results.store import ResultStore
from cadbench.report.check import compare
from cadbench.vocabulary.cell import Cell, cell_key


@dataclass(frozen=True)
class WideCell(Cell):
    """A cell with one more grid dimension, as a wave-2 lever adds one."""

    lever: str = "off"


def _row(cell: Cell, peak: int) -> dict:
    row = new_row({**cell.as_dict(), "test_scale": False}, {})
    row.update(status="ok", peak_memory_bytes=peak, memory_source="estimated")
    return explain_nulls(row, {"*": "not measured in this test"})


def test_a_new_cell_field_reaches_resume_and_check_without_edits(tmp_path):
    off, on = WideCell("cad", "vit_b", 4), WideCell("cad", "vit_b", 4, lever="on")
    assert off.key == "cad/vit_b/4/fp32"  # a dimension at its default leaves older keys as they were
    assert on.key == "cad/vit_b/4/fp32/lever=on"
    assert "lever" in WideCell.key_columns() and "lever on" in cell_label(on)

    store = ResultStore(tmp_path / "out", cell_type=WideCell)
    store.open({}, {})
    store.append(_row(off, 10))
    assert store.finished_keys() == {off.key}  # resume: the lever=on cell is still to be measured
    store.append(_row(on, 20))
    assert len(store.rows()) == 2

    baseline = {"path": "base", "rows": [_row(off, 10), _row(on, 20)]}
    results = {"path": "new", "rows": [_row(off, 10), _row(on, 30)]}
    findings = compare(results, baseline, tolerance=0.05, cell_type=WideCell)
    assert [(finding.key, finding.problem) for finding in findings] == [(on.key, "grew")]


def test_rows_without_a_newer_dimension_key_as_its_default():
    old_row = {"method": "cad", "backbone": "vit_b", "batch_size": 4, "precision": "fp32"}
    assert WideCell.key_of(old_row) == cell_key(old_row) == "cad/vit_b/4/fp32"
    assert WideCell.from_row(old_row) == WideCell("cad", "vit_b", 4)


def test_identity_columns_are_the_cell_fields():
    assert contract_columns()[:len(Cell.key_columns())] == Cell.key_columns()


@pytest.mark.parametrize("fields, message", [
    (("cad", "vit_b", 0), "batch size must be a positive integer, got 0"),
    (("cad", "vit_b", True), "batch size must be a positive integer, got True"),
    (("cad", "vit_b", 1, "fp8"), "unknown precision 'fp8'"),
])
def test_a_cell_checks_its_own_values_where_it_is_made(fields, message):
    with pytest.raises(CadbenchError, match=message):
        Cell(*fields)
    with pytest.raises(CadbenchError, match=message):
        make_cell(*fields)


@pytest.mark.parametrize("fields, message", [
    (("nope", "vit_b", 1), "unknown method 'nope'"),
    (("cad", "vit_x", 1), "unknown backbone 'vit_x'"),
])
def test_names_are_resolved_where_the_users_text_becomes_a_cell(fields, message):
    with pytest.raises(CadbenchError, match=message):
        make_cell(*fields)
    with pytest.raises(CadbenchError, match=message):
        expand_grid([fields[0]], [fields[1]], [1])


def test_cli_defaults_are_the_run_options_defaults(capsys):
    assert run_options(build_parser().parse_args(["run"])) == {}  # nothing given: RunOptions supplies every default
    given = run_options(build_parser().parse_args(["run", "--steps", "7", "--no-quality", "--device", "cpu"]))
    assert given == {"steps": 7, "dataset": None, "device": "cpu"}
    assert RunOptions(**given) == RunOptions(steps=7, dataset=None, device="cpu")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    assert f"before evaluating quality (default: {DEFAULTS.train_steps})" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("options, message", [
    ({"steps": 0}, "--steps must be positive"), ({"warmup": -1}, "--warmup must not be negative"),
    ({"train_steps": -1}, "--train-steps must not be negative"), ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_run_options_are_validated_once_where_they_are_made(options, message):
    with pytest.raises(CadbenchError, match=message):
        RunOptions(**options)


def test_method_options_join_the_key_and_a_method_at_its_defaults_keeps_todays_key():
    assert Cell("lora", "vit_b", 4).key == "lora/vit_b/4/fp32"
    assert make_cell("lora", "vit_b", 4, method_options="rank=4") == Cell("lora", "vit_b", 4)  # defaults drop
    sixteen = Cell("lora", "vit_b", 4, method_options="rank=16")
    assert sixteen.key == "lora:rank=16/vit_b/4/fp32" and sixteen.method_spec == "lora:rank=16"
    assert cell_label(sixteen) == "lora (rank 16) · vit_b · batch 4 · fp32"
    wide = WideCell("lora", "vit_b", 4, method_options="rank=16", lever="on")
    assert wide.key == "lora:rank=16/vit_b/4/fp32/lever=on"
    assert "method_options" in Cell.key_columns() and "method_options" not in Cell.positional_columns()


def test_rows_record_options_in_their_own_column_and_older_rows_mean_the_defaults():
    sixteen = Cell("lora", "vit_b", 4, method_options="rank=16")
    row = new_row({**sixteen.as_dict(), "test_scale": False}, {})
    assert row["method"] == "lora" and row["method_options"] == "rank=16"
    assert cell_key(row) == sixteen.key and Cell.from_row(row) == sixteen
    older = {"method": "lora", "backbone": "vit_b", "batch_size": 4, "precision": "fp32"}
    assert cell_key(older) == "lora/vit_b/4/fp32" and Cell.from_row(older) == Cell("lora", "vit_b", 4)
    assert cell_key({**older, "method_options": float("nan")}) == "lora/vit_b/4/fp32"  # an empty CSV cell


def test_resume_and_check_tell_a_method_with_options_from_the_same_method_without(tmp_path):
    plain, sixteen = Cell("lora", "vit_b", 4), Cell("lora", "vit_b", 4, method_options="rank=16")
    store = ResultStore(tmp_path / "out")
    store.open({}, {})
    store.append(_row(plain, 10))
    assert store.finished_keys() == {plain.key}  # resume: lora (rank 16) is still to be measured
    baseline = {"path": "base", "rows": [_row(plain, 10), _row(sixteen, 20)]}
    results = {"path": "new", "rows": [_row(plain, 10), _row(sixteen, 30)]}
    assert [(f.key, f.problem) for f in compare(results, baseline, tolerance=0.05)] == [(sixteen.key, "grew")]


def test_the_grid_takes_method_specs_and_gives_each_cell_once():
    cells = expand_grid(["lora:rank=16", "lora", "lora:rank=4", "cad"], ["vit_b"], [1])
    assert [cell.key for cell in cells] == ["lora:rank=16/vit_b/1/fp32", "lora/vit_b/1/fp32", "cad/vit_b/1/fp32"]
    with pytest.raises(CadbenchError, match="method lora: unknown option 'rnk'; valid: rank"):
        make_cell("lora", "vit_b", 1, method_options="rnk=2")


def test_allocator_settings_come_from_the_flag_or_the_environment_and_are_kept_validated(monkeypatch):
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", " expandable_segments: True")
    assert RunOptions().alloc_conf == "expandable_segments:True"  # read when the options are made
    assert RunOptions(alloc_conf="").alloc_conf == ""  # given: PyTorch's defaults, whatever the environment says
    assert RunOptions(alloc_conf="max_split_size_mb:64").resume_config()["alloc_conf"] == "max_split_size_mb:64"
    assert "alloc_conf" not in RunOptions(alloc_conf="").resume_config()  # older result folders still resume
    with pytest.raises(CadbenchError, match="^--alloc-conf: allocator setting max_split_size_mb: must be at least 20"):
        RunOptions(alloc_conf="max_split_size_mb:8")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:yes")
    with pytest.raises(CadbenchError, match="^PYTORCH_CUDA_ALLOC_CONF: allocator setting expandable_segments"):
        RunOptions()
    assert build_parser().parse_args(["estimate"])  # a bad environment does not break parsing or --help
