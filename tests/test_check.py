"""`cadbench check`: the memory gate's exit codes and messages; `cadbench baseline update`."""

import json

import pytest

from cadbench.cli import main

GIB = 1024**3


def _document(cells, schema_version=1, source="estimated"):
    rows = [{"method": method, "backbone": "vit_b", "batch_size": batch, "precision": "fp32", "status": status,
             "peak_memory_bytes": peak, "memory_source": source, "throughput_img_s": None}
            for method, batch, peak, status in cells]
    return {"schema_version": schema_version, "rows": rows}


@pytest.fixture
def files(tmp_path):
    def write(name, document):
        path = tmp_path / name
        path.write_text(document if isinstance(document, str) else json.dumps(document))
        return str(path)
    return write


BASE = [("cad", 4, 10 * GIB, "ok"), ("sam_adapter", 4, 40 * GIB, "ok")]


def test_within_tolerance_passes(files, capsys):
    baseline = files("base.json", _document(BASE))
    results = files("new.json", _document([("cad", 4, int(10.4 * GIB), "ok"), ("sam_adapter", 4, 39 * GIB, "ok")]))
    assert main(["check", results, "--baseline", baseline]) == 0
    assert "OK: 2 cells within 5.0%" in capsys.readouterr().out


def test_growth_beyond_tolerance_fails_naming_the_cell(files, capsys):
    baseline = files("base.json", _document(BASE))
    results = files("new.json", _document([("cad", 4, 11 * GIB, "ok"), ("sam_adapter", 4, 40 * GIB, "ok")]))
    assert main(["check", results, "--baseline", baseline]) == 1
    out = capsys.readouterr().out
    assert "cad/vit_b/4/fp32: peak memory 10.000 GiB -> 11.000 GiB (+10.0%)" in out
    assert main(["check", results, "--baseline", baseline, "--tolerance", "12%"]) == 0


def test_missing_or_failing_baseline_cell_fails(files, capsys):
    baseline = files("base.json", _document(BASE))
    results = files("new.json", _document([("cad", 4, 10 * GIB, "ok"), ("sam_adapter", 4, None, "oom")]))
    assert main(["check", results, "--baseline", baseline]) == 1
    assert "sam_adapter/vit_b/4/fp32: was ok in the baseline, now oom" in capsys.readouterr().out
    only_cad = files("cad.json", _document([("cad", 4, 10 * GIB, "ok")]))
    assert main(["check", only_cad, "--baseline", baseline]) == 1
    assert "sam_adapter/vit_b/4/fp32: missing from the results" in capsys.readouterr().out


@pytest.mark.parametrize("results, message", [
    ("{not json", "is not readable JSON"),
    (json.dumps({"rows": "nope"}), "is not a cadbench results file"),
    (json.dumps(_document(BASE, schema_version=99)), "has schema version 99"),
    (json.dumps(_document([("cad", 1, GIB, "ok")])), "no cell in common (different grid)"),
    (json.dumps(_document(BASE, source="cuda")), "memory source 'cuda' in the results but 'estimated'"),
])
def test_bad_input_exits_2_with_one_line(files, capsys, results, message):
    baseline = files("base.json", _document(BASE))
    assert main(["check", files("new.json", results), "--baseline", baseline]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_tolerance_and_missing_files(files, capsys):
    baseline = files("base.json", _document(BASE))
    assert main(["check", baseline, "--baseline", baseline, "--tolerance", "lots"]) == 2
    assert main(["check", "/nonexistent/results.json", "--baseline", baseline]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_baseline_update_writes_a_baseline_that_then_passes(files, tmp_path, capsys):
    results = files("new.json", _document(BASE))
    target = tmp_path / "baselines" / "b.json"
    assert main(["baseline", "update", results, "--baseline", str(target)]) == 0
    assert main(["check", results, "--baseline", str(target)]) == 0


@pytest.mark.parametrize("tolerance, message", [
    ("nan", "tolerance must be a finite number"),
    ("inf", "tolerance must be a finite number"),
    ("nan%", "tolerance must be a finite number"),
    ("-5%", "tolerance must not be negative, got '-5%'"),
    ("-0.05", "tolerance must not be negative"),
])
def test_a_tolerance_that_would_switch_the_gate_off_is_refused(files, capsys, tolerance, message):
    baseline = files("base.json", _document(BASE))
    for flag in ("--tolerance", "--throughput-tolerance"):
        assert main(["check", baseline, "--baseline", baseline, flag, tolerance]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.err.count("\n") == 1 and "OK" not in captured.out


@pytest.mark.parametrize("rows", [[], [("cad", 4, None, "oom")]])
def test_a_baseline_with_nothing_to_compare_is_an_error_not_a_pass(files, capsys, rows):
    baseline = files("base.json", _document(rows))
    results = files("new.json", _document(BASE))
    assert main(["check", results, "--baseline", baseline]) == 2
    captured = capsys.readouterr()
    assert "no cell that finished" in captured.err and captured.err.count("\n") == 1 and "OK" not in captured.out


def test_baseline_update_to_a_folder_or_an_unwritable_place_is_one_line(files, tmp_path, capsys):
    results = files("new.json", _document(BASE))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target, message in ((tmp_path, "is a folder"), (blocker / "b.json", "cannot")):
        assert main(["baseline", "update", results, "--baseline", str(target)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(target) in err and err.count("\n") == 1
