"""lora, full and peft through `cadbench run` on the CPU, end to end: real steps, estimates, quality, labels."""

import json

import pytest
from cadbench_in_process import cadbench_main, cells_measured_here

pytest.importorskip("peft", reason="the peft extra is not installed (pip install 'cadbench[peft]')")

SPECS = ("lora:rank=8", "full", "peft")  # the three new methods, one with options (each cell costs a process)


def test_the_new_methods_run_end_to_end_on_the_cpu_at_test_scale(tmp_path):
    out = tmp_path / "out"
    with cells_measured_here():  # the cell process is tested in test_harness.py
        result = cadbench_main("run", "--device", "cpu", "--backbone", "test_scale", "--methods", ",".join(SPECS),
                               "--batch-sizes", "2", "--steps", "2", "--warmup", "1", "--train-steps", "3",
                               "--no-progress", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = {(row["method"], row["method_options"]): row
            for row in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {("lora", "rank=8"), ("full", ""), ("peft", "")}
    for row in rows.values():
        assert row["status"] == "ok", row["error"]
        assert row["throughput_source"] == "cpu" and row["throughput_img_s"] > 0
        assert row["memory_source"] == "estimated" and row["peak_memory_bytes"] > 0
        assert 0 <= row["iou"] <= 1 and row["train_steps"] == 3
    # peft's default LoRA (r 8 over q, k and v: A 8 x d, B 3d x 8) has as many parameters as lora at rank 8 (q and v).
    assert rows["full", ""]["trainable_params"] > rows["peft", ""]["trainable_params"] == rows["lora", "rank=8"][
        "trainable_params"]
    # The terminal table and the report label the cell with its options; its side files are keyed by them.
    assert "lora (rank 8)" in result.stdout and "pipeline check (test scale, random weights) lora (rank 8) ·" in result.stdout
    assert "lora (rank 8)" in (out / "index.html").read_text()
    assert "lora:rank=8/test_scale/2/fp32" in json.loads((out / "timelines.json").read_text())
