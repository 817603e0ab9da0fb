"""The HTML report: self-contained, escaped, complete — and checked in a real headless Chromium."""

import itertools
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cadbench.cli import main
from cadbench.errors import CadbenchError
from cadbench.harness.results.rows import explain_nulls, new_row
from cadbench.harness.results.store import ResultStore
from cadbench.registry import default_methods
from cadbench.report import build_report

ARTIFACTS = Path(os.environ.get("CADBENCH_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GB = 10**9


def _fake_results(folder: Path, methods=("sam_adapter", "cad", "decoder_only"), backbones=("vit_b",)) -> Path:
    store = ResultStore(folder)
    store.open({"mode": "estimate"}, {"torch_version": "test"})
    for backbone, batch, (index, method) in itertools.product(backbones, (1, 2), enumerate(methods)):
        row = new_row({"method": method, "backbone": backbone, "test_scale": backbone == "test_scale",
                       "batch_size": batch, "precision": "fp32"}, {"torch_version": "test"})
        peak = (index + 1) * batch * GB
        row.update(status="ok", peak_memory_bytes=peak, memory_source="estimated",
                   reserved_memory_bytes=int(peak * 1.06), fragmentation_ratio=1.06, alloc_conf="default",
                   oom_capacity_bytes=int(peak * 1.05) + 2**30,
                   breakdown_parameters_bytes=GB // 2, breakdown_gradients_bytes=GB // 100,
                   breakdown_optimizer_states_bytes=GB // 50, breakdown_activations_bytes=GB,
                   breakdown_temporaries_bytes=GB // 3, trainable_params=1000, weights="random")
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    (folder / "timelines.json").write_text(json.dumps(
        {f"{m}/vit_b/2/fp32": [["forward", i * GB // 10] for i in range(20)] for m in methods}))
    return folder


def test_report_is_self_contained_and_escapes_names(tmp_path):
    folder = _fake_results(tmp_path / "run", methods=("sam_adapter", "<script>alert('x')</script>"))
    html = build_report([folder]).read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html), "remote asset in the report"
    assert "url(http" not in html
    assert html.count("<svg") >= 3  # memory vs batch, breakdown, timeline
    assert "Does it fit?" in html and "× sam_adapter" in html


def test_estimated_rows_say_how_they_were_made_and_a_report_without_them_does_not(tmp_path):
    """The estimator's notes (what it models, what it leaves out) reach the report whenever a row is estimated, with
    the notes of an allocator setting a row was simulated under, and a word where rows came from another version."""
    from markupsafe import escape

    from cadbench.estimator import AllocatorConfig
    from cadbench.estimator.estimate import NOTES

    folder = _fake_results(tmp_path / "estimated")
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    rows[0].update(alloc_conf="garbage_collection_threshold:0.6", cadbench_version="0.0.9")
    (folder / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "results.json").unlink()  # rebuilt from the journal
    ResultStore(folder).open({"mode": "estimate"}, {"torch_version": "test"})
    html = build_report([folder]).read_text()
    assert "How the estimates were made" in html
    for note in (*NOTES, *AllocatorConfig.parse("garbage_collection_threshold:0.6").notes):
        assert str(escape(note)) in html, note[:60]
    assert "rows estimated by cadbench 0.0.9 may have modelled less" in html

    measured = _fake_results(tmp_path / "measured")
    rows = [json.loads(line) for line in (measured / "results.jsonl").read_text().splitlines()]
    for row in rows:
        row["memory_source"] = "cuda"
    (measured / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (measured / "results.json").unlink()
    ResultStore(measured).open({"mode": "estimate"}, {"torch_version": "test"})
    assert "How the estimates were made" not in build_report([measured]).read_text()


def test_report_and_compare_commands(tmp_path, capsys):
    first = _fake_results(tmp_path / "a")
    second = _fake_results(tmp_path / "b")
    assert main(["report", str(first), str(second), "-o", str(tmp_path / "both.html")]) == 0
    assert (tmp_path / "both.html").exists()
    assert main(["compare", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "+0.0%" in out and (second / "compare.html").exists()
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no results.json" in capsys.readouterr().err
    with pytest.raises(CadbenchError):
        build_report([tmp_path / "missing"])


def test_compare_keeps_integer_columns_integers_where_a_cell_is_only_on_one_side(tmp_path):
    from cadbench.report.compare import compare_results, format_table

    table = compare_results(_fake_results(tmp_path / "a", backbones=("vit_b",)),
                            _fake_results(tmp_path / "b", backbones=("vit_l",)))
    assert set(table["only in"]) == {"A", "B"}
    assert pd.api.types.is_integer_dtype(table["batch_size"]) and set(table["batch_size"]) == {1, 2}
    shown = format_table(table).to_string()
    assert " 1.0 " not in shown and " 2.0 " not in shown


def test_report_of_a_real_run_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it and runs this test")
    playwright = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "run"
    assert main(["estimate", "--backbone", "test_scale", "--batch-sizes", "1,2", "--no-progress",
                 "--out", str(out)]) == 0
    report = out / "index.html"
    errors, failed_requests = [], []
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("requestfailed", lambda request: failed_requests.append(request.url))
        page.goto(report.as_uri())
        assert errors == [] and failed_requests == []
        tables = page.locator("table.results")
        assert tables.count() == 1
        methods = len(default_methods())
        assert page.locator("table.results tbody tr").count() == methods * 2  # every method x 2 batch sizes
        assert page.locator("table.fit").count() == 0  # test scale only: nothing to choose a GPU by
        assert page.locator("figure svg").count() >= 3
        assert page.locator("#estimates").is_visible() and page.locator("#estimates + p + ul li").count() >= 6
        for index in range(page.locator("img").count()):  # any <img> must have decoded
            assert page.locator("img").nth(index).evaluate("i => i.complete && i.naturalWidth > 0")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()


@pytest.mark.parametrize("form", ["results.json", "results.csv"])
def test_compare_takes_a_results_file_as_b_and_writes_beside_it(tmp_path, capsys, form):
    first = _fake_results(tmp_path / "a")
    second = _fake_results(tmp_path / "b")
    assert main(["compare", str(first), str(second / form)]) == 0
    assert "+0.0%" in capsys.readouterr().out
    assert (second / "compare.html").exists()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_an_output_path_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, capsys, command):
    first = _fake_results(tmp_path / "a")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folders = [str(first)] if command == "report" else [str(first), str(first)]
    for target, message in ((tmp_path, "is a folder"), (blocker / "x.html", "cannot write")):
        assert main([command, *folders, "-o", str(target)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(target) in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["report", "compare"])
def test_another_schema_version_is_named_rather_than_read_as_no_rows(tmp_path, capsys, command):
    first = _fake_results(tmp_path / "a")
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"schema_version": 2, "cells": []}))
    folders = [str(other)] if command == "report" else [str(first), str(other)]
    assert main([command, *folders]) == 2
    err = capsys.readouterr().err
    assert "has schema version 2; this cadbench reads version 1" in err and err.count("\n") == 1


def test_a_damaged_side_file_does_not_stop_the_report(tmp_path, capsys):
    folder = _fake_results(tmp_path / "run")
    (folder / "timelines.json").write_text("{broken")
    assert main(["report", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "timelines.json" in err and err.count("\n") == 1


def test_a_method_with_options_is_labelled_with_them_and_ratios_use_the_baseline_spec(tmp_path):
    store = ResultStore(tmp_path / "run")
    store.open({"mode": "estimate"}, {"torch_version": "test"})
    for method, options, peak in (("sam_adapter", "", 4), ("lora", "", 2), ("lora", "rank=16", 3)):
        row = new_row({"method": method, "method_options": options, "backbone": "vit_b", "test_scale": False,
                       "batch_size": 1, "precision": "fp32"}, {"torch_version": "test"})
        row.update(status="ok", peak_memory_bytes=peak * GB, memory_source="estimated", weights="random")
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    html = build_report([tmp_path / "run"]).read_text()
    assert "lora (rank 16) needs 0.75×" in html and "lora needs 0.50×" in html  # the headline, against sam_adapter
    against_lora16 = build_report([tmp_path / "run"], tmp_path / "other.html", baseline_method="lora:rank=16")
    assert "× lora (rank 16)" in against_lora16.read_text()


def _quality_results(folder: Path) -> Path:
    """Full-size rows under two protocols (one all zero), and test-scale rows with random weights."""
    store = ResultStore(folder)
    store.open({"mode": "cuda"}, {"torch_version": "test"})
    curves = {}
    for backbone, protocol, batch, iou in (("vit_b", "quick", 1, 0.0), ("vit_b", "cad-paper", 4, 0.61),
                                           ("test_scale", "quick", 2, 0.0)):
        for method in ("sam_adapter", "cad"):
            row = new_row({"method": method, "backbone": backbone, "test_scale": backbone == "test_scale",
                           "batch_size": batch, "precision": "fp32"}, {"torch_version": "test"})
            row.update(status="ok", peak_memory_bytes=GB, memory_source="cuda", weights="random", protocol=protocol,
                       iou=iou, dice=iou * 1.1, train_steps=3)
            store.append(explain_nulls(row, {"*": "not measured in this test"}))
            curves[f"{method}/{backbone}/{batch}/fp32"] = {
                "losses": [1.6, 1.5, 1.4], "resumed_from_epoch": None,
                "epochs": [{"epoch": epoch, "step": 3 * epoch, "lr": 2e-4, "validation_iou": iou,
                            "validation_dice": iou} for epoch in ((1, 2) if protocol == "cad-paper" else (1,))]}
    (folder / "loss_curves.json").write_text(json.dumps(curves))
    return folder


def test_quality_holds_full_size_rows_one_protocol_per_chart_and_test_scale_is_a_pipeline_check(tmp_path):
    html = build_report([_quality_results(tmp_path / "run")]).read_text()
    quality, _, rest = html.partition('<h2 id="pipeline-check">')
    quality = quality[quality.index("<h2>Quality</h2>"):]
    assert quality.count('<h3 class="protocol">') == 2
    assert "protocol quick" in quality and "protocol cad-paper" in quality
    assert "segmentation quality (test split), protocol cad-paper" in quality
    assert "validation after each epoch, protocol cad-paper" in quality
    assert "validation after each epoch, protocol quick" not in quality  # one score per cell: the table's, no curve
    assert "test_scale" not in quality  # the demo model is no quality result
    assert "the models predict background everywhere" in quality  # all-zero bars say why
    assert "Pipeline check (test scale, random weights)" in rest
    assert "not how good any method is" in rest and "predicts background everywhere" in rest
    assert "1.600 → 1.400" in rest
    assert "(check)" in html  # the per-backbone table marks the test-scale scores too


def test_older_loss_curves_without_epochs_still_draw(tmp_path):
    folder = _quality_results(tmp_path / "run")
    (folder / "loss_curves.json").write_text(json.dumps({"cad/vit_b/4/fp32": [1.0, 0.9, 0.8]}))
    assert "fine-tuning loss, protocol cad-paper" in build_report([folder]).read_text()


def test_folders_of_two_protocols_keep_their_quality_rows_apart(tmp_path):
    quick = _quality_results(tmp_path / "quick")
    paper = tmp_path / "paper"
    store = ResultStore(paper)
    store.open({"mode": "cuda"}, {"torch_version": "test"})
    row = new_row({"method": "cad", "backbone": "vit_b", "test_scale": False, "batch_size": 1, "precision": "fp32"},
                  {"torch_version": "test"})  # the same cell as in `quick`, under another protocol
    row.update(status="ok", peak_memory_bytes=GB, memory_source="cuda", weights="random", protocol="sam-adapter-paper",
               iou=0.7, dice=0.8, train_steps=40)
    store.append(explain_nulls(row, {"*": "not measured in this test"}))
    (paper / "loss_curves.json").write_text(json.dumps({"cad/vit_b/1/fp32": {
        "protocol": "sam-adapter-paper", "losses": [0.9, 0.5], "epochs": [], "resumed_from_epoch": None}}))
    html = build_report([quick, paper], out_file=tmp_path / "both.html").read_text()
    for protocol in ("quick", "cad-paper", "sam-adapter-paper"):
        assert f'<h3 class="protocol">protocol {protocol}</h3>' in html
    assert "fine-tuning loss, protocol sam-adapter-paper" in html and "fine-tuning loss, protocol quick" in html


def test_report_names_levers_in_the_fit_table_and_shows_not_applicable_rows(tmp_path):
    folder = _fake_results(tmp_path / "run", methods=("sam_adapter", "cad"))
    store = ResultStore(folder)
    store.open({"mode": "estimate"}, {"torch_version": "test"})
    identity = {"backbone": "vit_b", "test_scale": False, "batch_size": 2, "precision": "fp32",
                "checkpointing": "encoder"}
    levered = new_row({**identity, "method": "sam_adapter"}, {"torch_version": "test"})
    levered.update(status="ok", peak_memory_bytes=3 * GB, memory_source="estimated", oom_capacity_bytes=7 * GB,
                   reserved_memory_bytes=4 * GB, weights="random")
    store.append(explain_nulls(levered, {"*": "not measured in this test"}))
    skipped = new_row({**identity, "method": "cad"}, {"torch_version": "test"})
    skipped.update(status="not_applicable", error="checkpointed encoder does not apply to cad: no_grad encoder")
    store.append(explain_nulls(skipped, {"*": "not measured: checkpointed encoder does not apply"}))
    html = build_report([folder]).read_text()
    fit = html[html.index("Does it fit?"):]
    assert "<th>8 GB</th>" in fit.replace(' class=""', "")
    assert "sam_adapter + checkpointed encoder" in fit and "cad + checkpointed encoder" not in fit
    assert "not applicable: checkpointed encoder does not apply to cad" in html


def test_the_fit_table_lists_full_size_models_only_since_a_test_scale_one_says_nothing_about_a_gpu(tmp_path):
    folder = _fake_results(tmp_path / "run", backbones=("vit_b", "test_scale"))
    html = build_report([folder]).read_text()
    fit = html[html.index('<table class="fit">'):]
    fit = fit[:fit.index("</table>")]
    assert fit.count("<tr>") == 1 + 3  # the header and one line per method, vit_b only
    assert fit.count(">vit_b<") == 3 and "test" not in fit.lower()


def test_a_noisy_timing_is_marked_in_the_table_and_explained_under_it(tmp_path):
    store = ResultStore(tmp_path / "run")
    store.open({"mode": "cpu"}, {"torch_version": "test"})
    for batch, img_s, noisy in ((1, 25.0, False), (2, 0.96, True), (4, 27.0, False)):
        row = new_row({"method": "cad", "backbone": "test_scale", "test_scale": True, "batch_size": batch,
                       "precision": "fp32"}, {"torch_version": "test"})
        row.update(status="ok", peak_memory_bytes=GB // 10, memory_source="estimated", throughput_img_s=img_s,
                   throughput_source="cpu", step_time_noisy=noisy, step_time_retimed=noisy, weights="random")
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    html = build_report([tmp_path / "run"]).read_text()
    assert ">0.96 (cpu) noisy<" in html and ">25.00 (cpu)<" in html and ">27.00 (cpu)<" in html
    assert "images/s marked “noisy”: the slowest steps (p90) took over 2×" in html


def test_each_row_names_the_device_its_steps_ran_on_and_an_estimate_names_none(tmp_path):
    """The results table's device column: the GPU a launcher pinned the cell to, the CPU with the name (not the long
    value) of the malloc setting it ran under, a dash where no step ran on a device."""
    store = ResultStore(tmp_path / "run")
    store.open({"mode": "cuda"}, {"torch_version": "test"})
    devices = {1: ("NVIDIA Fake H100 80GB", 3), 2: ("NVIDIA Fake L4", None),
               4: ("cpu (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824)", None), 8: (None, None)}
    for batch, (device, gpu_index) in devices.items():
        row = new_row({"method": "cad", "backbone": "vit_b", "test_scale": False, "batch_size": batch,
                       "precision": "fp32"}, {"torch_version": "test"})
        row.update(status="ok", peak_memory_bytes=batch * GB, memory_source="cuda" if device else "estimated",
                   device=device, gpu_index=gpu_index, weights="random")
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    html = build_report([tmp_path / "run"]).read_text()
    table = html[html.index("<tbody>"):html.index("</tbody>")]
    lines = [[re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>.*?</td>", line)]
             for line in re.findall(r"<tr>.*?</tr>", table)]
    header = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", html[html.index("<thead>"):html.index("</thead>")])
    column = header.index("device")
    assert header[column - 1] == "source"
    assert [line[column] for line in lines] == ["GPU 3: NVIDIA Fake H100 80GB", "NVIDIA Fake L4",
                                                "cpu (GLIBC_TUNABLES)", "—"]
    # a table of estimates only: no step ran on a device, so no column of dashes
    html = build_report([_fake_results(tmp_path / "estimated")]).read_text()
    header = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", html[html.index("<thead>"):html.index("</thead>")])
    assert header[:6] == ["method", "batch", "precision", "status", "peak memory", "source"]
    assert "device" not in header


def test_the_lever_table_names_the_cheapest_combination_in_the_results_that_fits_each_card(tmp_path):
    store = ResultStore(tmp_path / "run")
    store.open({"mode": "estimate"}, {"torch_version": "test"})
    combinations = [  # (levers, card needed in GB, FLOPs)
        ({}, 70, 100), ({"checkpointing": "encoder"}, 20, 136), ({"precision": "bf16"}, 60, 100),
        ({"precision": "bf16", "checkpointing": "encoder"}, 12, 136), ({"micro_batch": 1}, 22, 100)]
    for method, (levers, needed, flops) in [("sam_adapter", c) for c in combinations] + [("cad", ({}, 30, 50))]:
        row = new_row({"method": method, "backbone": "vit_h", "test_scale": False, "batch_size": 4,
                       "precision": "fp32", **levers}, {"torch_version": "test"})
        row.update(status="ok", peak_memory_bytes=(needed - 2) * GB, memory_source="estimated",
                   oom_capacity_bytes=needed * GB, reserved_memory_bytes=(needed - 1) * GB, flops_per_step=flops,
                   weights="random")
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    html = build_report([tmp_path / "run"]).read_text()
    table = html[html.index("Cheapest levers that fit"):]
    table = table[table.index("<tbody>"):table.index("</tbody>")]
    cells = [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>.*?</td>", table)]
    # one line: cad holds a single combination, nothing to choose between
    assert cells == ["sam_adapter", "vit_h", "4", "—", "micro-batch 1needs 22.0 GB", "micro-batch 1needs 22.0 GB",
                     "micro-batch 1needs 22.0 GB", "noneneeds 70.0 GB"], cells


def test_objects_per_image_is_a_task_of_its_own_in_the_lever_table_never_a_lever(tmp_path):
    """A cell with 8 objects per image is another task, not a cheaper lever combination: the lever table groups it
    apart, and its method label names it."""
    store = ResultStore(tmp_path / "run")
    store.open({"mode": "estimate"}, {"torch_version": "test"})
    for prompts, levers, needed in (("image", {}, 30), ("image", {"lean_encoder": "on"}, 10), (8, {}, 5),
                                    (8, {"lean_encoder": "on"}, 4)):
        row = new_row({"method": "decoder_only", "backbone": "vit_b", "test_scale": False, "batch_size": 4,
                       "precision": "fp32", "prompts_per_image": prompts, **levers}, {"torch_version": "test"})
        row.update(status="ok", peak_memory_bytes=(needed - 2) * GB, memory_source="estimated",
                   oom_capacity_bytes=needed * GB, reserved_memory_bytes=(needed - 1) * GB, flops_per_step=100,
                   weights="random")
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    html = build_report([tmp_path / "run"]).read_text()
    table = html[html.index("Cheapest levers that fit"):]
    table = table[table.index("<tbody>"):table.index("</tbody>")]
    lines = [[re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>.*?</td>", line)]
             for line in re.findall(r"<tr>.*?</tr>", table, re.S)]
    assert [line[0] for line in lines] == ["decoder_only", "decoder_only + 8 objects per image"]
    # without the split, the 8-object cell (5 GB) would be "the cheapest levers" of the whole-image task
    assert lines[0][3:6] == ["—", "lean encoderneeds 10.0 GB", "noneneeds 30.0 GB"]
    assert lines[1][3] == "noneneeds 5.0 GB"
    assert "decoder_only + 8 objects per image" in html


def test_a_results_json_whose_environment_cannot_be_read_costs_the_environment_not_the_report(tmp_path, capsys):
    from cadbench.report.html import _environment

    (tmp_path / "results.json").write_text("{broken")
    assert set(_environment(tmp_path).values()) == {None}
    err = capsys.readouterr().err
    assert "results.json is damaged" in err and "the report shows no environment" in err and err.count("\n") == 1
    (tmp_path / "results.json").write_text('{"environment": ["not", "a", "mapping"]}')
    assert set(_environment(tmp_path).values()) == {None}


def _object_results(folder: Path, weights: str) -> Path:
    """Fine-tuned full-size rows of the object protocol with their zero-shot and box-fill references."""
    store = ResultStore(folder)
    store.open({"mode": "cuda"}, {"torch_version": "test"})
    for method, iou in (("decoder_only", 0.77), ("cad", 0.55)):
        row = new_row({"method": method, "backbone": "vit_b", "test_scale": False, "batch_size": 2,
                       "precision": "fp32", "prompts_per_image": 4}, {"torch_version": "test"})
        row.update(status="ok", peak_memory_bytes=GB, memory_source="cuda", weights=weights, protocol="quick",
                   iou=iou, dice=iou + 0.1, train_steps=80, zero_shot_iou=0.6, zero_shot_dice=0.7, box_fill_iou=0.45,
                   box_fill_dice=0.61, eval_box_margin_px=3, train_box_jitter="outward by U(0, 0.025) x the side")
        store.append(explain_nulls(row, {"*": "not measured in this test"}))
    return folder


def test_the_quality_section_puts_each_method_beside_zero_shot_and_box_fill(tmp_path):
    html = build_report([_object_results(tmp_path / "run", "sha256:" + "ab" * 32)]).read_text()
    quality = html[html.index("<h2>Quality</h2>"):]
    assert "Against zero-shot and box fill" in quality
    assert "+0.170 / +0.170" in quality and "-0.050 / -0.050" in quality  # each method against zero-shot
    assert "0.450" in quality and "tight box plus 3 px" in quality and "U(0, 0.025)" in quality
    assert "meaningless" not in quality


def test_with_random_weights_the_zero_shot_comparison_says_it_is_meaningless_rather_than_hiding_it(tmp_path):
    html = build_report([_object_results(tmp_path / "run", "random")]).read_text()
    quality = html[html.index("<h2>Quality</h2>"):]
    # each method's and box fill's gain over zero-shot; box fill's own score does not depend on the weights
    assert quality.count("meaningless (random weights)") == 3 and "+0.170" not in quality
    assert "0.600" in quality and "0.450" in quality  # the zero-shot and box-fill figures themselves are still shown


def test_a_method_whose_definition_on_a_family_is_cadbenchs_own_says_so_under_that_backbones_table(tmp_path):
    folder = _fake_results(tmp_path / "run", methods=("cad", "decoder_only"), backbones=("vit_b", "sam2.1_hiera_t"))
    html = build_report([folder]).read_text()
    notes = re.findall(r'<p class="note own-definition">([^<]*)</p>', html)
    assert len(notes) == 1  # cad on SAM 2.1 only: on SAM it is the paper's, and decoder_only is nobody's extension
    assert notes[0].startswith("cad on sam2.1_hiera_t: cadbench&#39;s own extension of CAD")
    assert html.index(notes[0]) > html.index('data-backbone="sam2.1_hiera_t"')


def test_tables_are_grouped_by_model_family_each_where_it_first_appears(tmp_path):
    folder = _fake_results(tmp_path / "run", methods=("decoder_only",),
                           backbones=("vit_b", "sam2.1_hiera_t", "vit_l", "litemedsam"))
    html = build_report([folder]).read_text()
    families = re.findall(r'<h2 class="family">([^<]*)</h2>', html)
    assert families == ["SAM (ViT image encoder)", "SAM 2.1 (Hiera image encoder)",
                        "LiteMedSAM (TinyViT image encoder)"]
    tables = re.findall(r'data-backbone="([^"]*)"', html)
    assert tables == ["vit_b", "vit_l", "sam2.1_hiera_t", "litemedsam"]  # vit_l joins vit_b under SAM
    # a not_applicable row (written before anything runs, as sam_adapter's on LiteMedSAM is) does not move its family
    store = ResultStore(tmp_path / "blocked_first")
    store.open({"mode": "estimate"}, {"torch_version": "test"})
    blocked = new_row({"method": "sam_adapter", "backbone": "litemedsam", "test_scale": False, "batch_size": 1,
                       "precision": "fp32"}, {"torch_version": "test"})
    blocked.update(status="not_applicable", error="no faithful definition on TinyViT")
    store.append(explain_nulls(blocked, {"*": "not applicable in this test"}))
    for line in (folder / "results.jsonl").read_text().splitlines():
        if '"status"' in line:
            store.append(json.loads(line))
    html = build_report([store.out_dir]).read_text()
    assert re.findall(r'<h2 class="family">([^<]*)</h2>', html) == families
    one_family = build_report([_fake_results(tmp_path / "sam", methods=("decoder_only",),
                                             backbones=("vit_b", "vit_l"))]).read_text()
    assert '<h2 class="family">' not in one_family and "<h2>" in one_family  # one family: no extra level
