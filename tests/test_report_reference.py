"""The estimator's measured error in the HTML report (cadbench.report.reference): read from reference GPU folders
the tests write, shown beside each estimate of a matching GPU model and cell, and nowhere when none matches."""

import re
from pathlib import Path

from cadbench.harness.results.rows import explain_nulls, new_row

from cadbench.harness.results.store import ResultStore
from cadbench.report import build_report
from cadbench.report.reference import load_references
from cadbench.vocabulary.cell import Cell

GiB = 1 << 30
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"


def write_results(folder: Path, rows: list[dict], environment: dict) -> Path:
    store = ResultStore(folder)
    store.open({"mode": "test"}, environment)
    for fields in rows:
        cell = Cell(fields.pop("method"), "vit_b", fields.pop("batch_size"))
        row = new_row({**cell.as_dict(), "test_scale": False}, environment)
        row.update(fields)
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    return folder


def write_reference(root: Path, gpu: str, date: str, measured: dict[tuple[str, int], int | str]) -> Path:
    """A reference folder as `cadbench validate --reference` leaves it: CUDA rows (bytes, or 'oom')."""
    rows = [{"method": method, "batch_size": batch, "status": "oom", "error": "CUDA out of memory"}
            if value == "oom" else
            {"method": method, "batch_size": batch, "status": "ok", "peak_memory_bytes": value,
             "memory_source": "cuda"}
            for (method, batch), value in measured.items()]
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower())
    return write_results(root / f"{slug}-{date}", rows,
                         {"gpu_name": gpu, "timestamp": f"{date}T12:00:00+00:00", "git_commit": "abc1234"})


def write_estimates(folder: Path, gpu: str | None = None) -> Path:
    """Estimated rows: cad at batch 1, 2 and 4 (10.2, 20 and 40 GiB)."""
    rows = [{"method": "cad", "batch_size": batch, "status": "ok", "memory_source": "estimated",
             "peak_memory_bytes": peak} for batch, peak in ((1, int(10.2 * GiB)), (2, 20 * GiB), (4, 40 * GiB))]
    return write_results(folder, rows, {"gpu_name": gpu, "torch_version": "test"})


def table_cells(html: str, method: str = "cad") -> dict[str, dict[str, str]]:
    """{batch: {column: text}} of the report's results table."""
    header = re.search(r"<table class=\"results\".*?<thead><tr>(.*?)</tr></thead>", html, re.S).group(1)
    columns = re.findall(r"<th[^>]*>(.*?)</th>", header)
    lines = {}
    for body in re.findall(r"<tr>(<td.*?)</tr>", html, re.S):
        values = re.findall(r"<td[^>]*>(.*?)</td>", body)
        if len(values) == len(columns) and values[0] == method:
            lines[values[1]] = dict(zip(columns, values))
    return lines


def test_each_estimate_shows_its_error_against_the_reference_measurement_of_the_same_cell(tmp_path):
    references = tmp_path / "reference"
    write_reference(references, H100, "2025-06-30", {("cad", 1): 10 * GiB, ("cad", 2): "oom"})
    html = build_report([write_estimates(tmp_path / "estimate")], reference_root=references).read_text()
    column = "est. error on H100 80GB HBM3"
    lines = table_cells(html)
    assert lines["1"][column] == "+2.00%"  # 10.2 GiB estimated, 10 GiB measured
    assert lines["2"][column] == "oom"
    assert lines["4"][column] == "—"  # not measured on the reference GPU
    note = re.search(r'<p class="note references">(.*?)</p>', html, re.S).group(1)
    assert H100 in note and "2025-06-30" in note and "abc1234" in note
    assert str(references / "nvidia-h100-80gb-hbm3-2025-06-30") in note


def test_nothing_is_shown_when_no_reference_matches_a_cell(tmp_path):
    references = tmp_path / "reference"
    write_reference(references, H100, "2025-06-30", {("decoder_only", 1): GiB})
    html = build_report([write_estimates(tmp_path / "estimate")], reference_root=references).read_text()
    assert "est. error" not in html.lower() and 'class="note references"' not in html
    html = build_report([write_estimates(tmp_path / "again")], reference_root=tmp_path / "none").read_text()
    assert "est. error" not in html.lower()


def test_results_that_name_a_gpu_are_matched_with_that_gpu_model_only(tmp_path):
    references = tmp_path / "reference"
    write_reference(references, H100, "2025-06-30", {("cad", 1): 10 * GiB})
    estimates = write_estimates(tmp_path / "estimate", gpu=A100)
    assert "est. error" not in build_report([estimates], reference_root=references).read_text()
    write_reference(references, A100, "2025-05-01", {("cad", 1): int(10.2 * GiB)})
    lines = table_cells(build_report([estimates], reference_root=references).read_text())
    assert lines["1"]["est. error on A100-SXM4-80GB"] == "+0.00%"
    assert not any("H100" in column for column in lines["1"])


def test_without_a_named_gpu_the_newest_reference_of_each_model_is_shown(tmp_path):
    references = tmp_path / "reference"
    write_reference(references, H100, "2025-01-01", {("cad", 1): 5 * GiB})
    write_reference(references, H100, "2025-06-30", {("cad", 1): 10 * GiB})
    write_reference(references, A100, "2025-05-01", {("cad", 1): int(10.2 * GiB)})
    (references / "not-a-reference").mkdir()
    (references / "not-a-reference" / "results.json").write_text("{broken")
    html = build_report([write_estimates(tmp_path / "estimate")], reference_root=references).read_text()
    lines = table_cells(html)
    errors = {column: text for column, text in lines["1"].items() if column.startswith("est. error")}
    assert errors == {"est. error on H100 80GB HBM3": "+2.00%", "est. error on A100-SXM4-80GB": "+0.00%"}
    note = re.search(r'<p class="note references">(.*?)</p>', html, re.S).group(1)
    assert "2025-06-30" in note and "2025-01-01" not in note
    assert len(load_references(references)) == 3


def test_measured_rows_get_no_estimate_error(tmp_path):
    references = tmp_path / "reference"
    folder = write_reference(references, H100, "2025-06-30", {("cad", 1): 10 * GiB})
    assert "est. error" not in build_report([folder], reference_root=references).read_text()
