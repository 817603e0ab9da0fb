"""The tables printed at the end of a sweep: memory per method, and throughput in a table of its own."""

from __future__ import annotations

import pandas as pd

from cadbench.harness.results.rows import contract_columns, new_row
from cadbench.report.terminal import comparison_table, throughput_table, to_text


def _row(method: str, backbone: str, batch_size: int, img_s: float | None = None, noisy: bool | None = None) -> dict:
    row = new_row({"method": method, "backbone": backbone, "test_scale": backbone == "test_scale",
                   "batch_size": batch_size, "precision": "fp32"}, {})
    row.update(status="ok", peak_memory_bytes=batch_size * 10**9, memory_source="estimated",
               throughput_img_s=img_s, throughput_source="cpu" if img_s is not None else None,
               step_time_noisy=noisy)
    return row


ROWS = pd.DataFrame([_row("cad", "vit_b", 8), _row("sam_adapter", "vit_b", 8),
                     _row("cad", "test_scale", 1, 25.0, False), _row("sam_adapter", "test_scale", 1, 27.5, False),
                     _row("cad", "test_scale", 8, 0.96, True), _row("sam_adapter", "test_scale", 8, 31.25, False)],
                    columns=list(contract_columns()))


def test_throughput_has_its_own_table_with_one_column_per_method_and_only_the_timed_cells():
    table = throughput_table(ROWS)
    assert list(table.columns) == ["backbone", "batch", "precision", "cad", "sam_adapter"]
    assert table.to_dict("records") == [
        {"backbone": "test_scale", "batch": 1, "precision": "fp32", "cad": "25.00", "sam_adapter": "27.50"},
        {"backbone": "test_scale", "batch": 8, "precision": "fp32", "cad": "0.96 noisy", "sam_adapter": "31.25"},
    ]


def test_the_memory_table_keeps_memory_only_and_nothing_is_printed_for_throughput_without_timings():
    assert "img/s" not in comparison_table(ROWS, "sam_adapter").columns
    assert throughput_table(ROWS[ROWS["backbone"] == "vit_b"]).empty


def test_a_table_wider_than_the_terminal_is_wrapped_into_blocks_that_fit(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    lines = to_text(comparison_table(ROWS, "sam_adapter")).splitlines()
    assert max(map(len, lines)) <= 40 and len(lines) > 5


def test_a_quality_line_names_the_pixels_of_a_cell_off_its_native_size(capsys, tmp_path):
    from cadbench.report.terminal import print_sweep_summary

    rows = []
    for size in (0, 64):
        row = _row("cad", "test_scale", 2, 20.0, False)
        row.update(image_size=size, image_px=size or 128, iou=0.25, dice=0.4, train_steps=4, protocol="quick",
                   quality_dataset="synthetic", weights="random")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(contract_columns()))
    print_sweep_summary(frame, ["cad"], None, "cpu", tmp_path, ["cpu"], 0, [], [])
    lines = [line for line in capsys.readouterr().out.splitlines() if "IoU 0.250" in line]
    assert [line.split(" · ")[1] for line in lines] == ["test_scale (test scale)", "test_scale (test scale) at 64 px"]


def test_a_fine_tuned_objects_row_reads_against_zero_shot_and_box_fill_and_random_weights_say_so():
    from cadbench.report.terminal import reference_phrase

    row = {"iou": 0.77, "dice": 0.86, "zero_shot_iou": 0.70, "zero_shot_dice": 0.80, "box_fill_iou": 0.45,
           "box_fill_dice": 0.61, "eval_box_margin_px": 3, "weights": "sha256:" + "ab" * 32}
    text = reference_phrase(row)
    assert "+0.070 IoU / +0.060 Dice over zero-shot (IoU 0.700, Dice 0.800)" in text
    assert "box fill IoU 0.450, Dice 0.610 (eval boxes +3 px)" in text
    random = reference_phrase({**row, "weights": "random"})
    assert "meaningless, random weights" in random and "+0.070" not in random
    assert reference_phrase({**row, "zero_shot_iou": None}) == ""  # the whole-image protocol has no references


def test_each_test_scale_backbone_is_described_as_itself_not_as_the_test_scale_sam(capsys, tmp_path):
    """The note under a sweep that timed test-scale cells names each test-scale backbone with its own description (a
    SAM 2 test scale is not "a tiny SAM, 4 blocks")."""
    from cadbench.report.terminal import print_sweep_summary

    frame = pd.DataFrame([_row("full", backbone, 2, 20.0, False) for backbone in ("test_scale", "sam2_test_scale")],
                         columns=list(contract_columns()))
    print_sweep_summary(frame, ["full"], None, "cpu", tmp_path, ["cpu", "cpu"], 0, [], [])
    notes = [line for line in capsys.readouterr().out.splitlines() if "for CPU demos" in line]
    assert [line.split(":")[0] for line in notes] == ["sam2_test_scale", "test_scale"]
    assert notes[0].startswith("sam2_test_scale: a tiny model (a small SAM 2 by Meta's builder and classes")
    assert notes[1].startswith("test_scale: a tiny SAM (128 px, 4 blocks) made of Meta's classes, for CPU demos.")
