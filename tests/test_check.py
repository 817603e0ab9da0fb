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
