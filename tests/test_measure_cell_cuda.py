"""The CUDA mode of a cell (cadbench.harness.measure_cell) and the sweep over such cells, on CPU through the fake
CUDA layer: the row a GPU cell writes, out-of-memory as a result, each cell in a fresh process, NVML found by UUID
in the cell's process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cadbench_fakecuda import FakeCudaConfig, GiB, MiB, StepProfile, gpus, install_for_test

from cadbench.harness.environment import collect_environment
from cadbench.harness.measure_cell import measure_cell
from cadbench.harness.options import RunOptions
from cadbench.harness.results.rows import unexplained_nulls
from cadbench.vocabulary.cell import Cell

TESTS = Path(__file__).parent
PROFILE = StepProfile(weights_bytes=256 * MiB, optimizer_bytes=512 * MiB, bytes_per_image=512 * MiB,
                      first_step_extra_bytes=256 * MiB, seconds_per_image=0.05)
CONTEXT = 500 * MiB


def steady_peak(batch_size: int) -> int:
    return PROFILE.weights_bytes + PROFILE.optimizer_bytes + batch_size * PROFILE.bytes_per_image


def test_a_cuda_cell_row_holds_cudas_peaks_nvmls_peak_and_event_times(monkeypatch):
    fake = install_for_test(monkeypatch, FakeCudaConfig(gpus=gpus(1), context_bytes=CONTEXT, profile=PROFILE))
    row = measure_cell(Cell("decoder_only", "test_scale", 2), "cuda", RunOptions(steps=3, warmup=2, dataset=None),
                       collect_environment())
    assert row["status"] == "ok", row["error"]
    assert (row["peak_memory_bytes"], row["memory_source"]) == (steady_peak(2), "cuda")
    reserved = steady_peak(2) + PROFILE.first_step_extra_bytes  # the warm-up's one-off stays cached
    assert row["reserved_memory_bytes"] == reserved
    assert row["nvml_process_memory_bytes"] == row["nvml_process_peak_bytes"] == CONTEXT + reserved
    times = [0.05 * 2 * factor for factor in (1.2, 1.0, 1.1)]  # the fake's step times, launches 3 to 5
    assert row["step_time_median_s"] == pytest.approx(sorted(times)[1])
    assert row["throughput_img_s"] == pytest.approx(2 / sorted(times)[1])
    assert (row["throughput_source"], row["device"]) == ("cuda", "NVIDIA Fake H100 80GB HBM3")
    assert row["device_total_memory_bytes"] == 80 * GiB
    assert unexplained_nulls(row) == []
    assert ["placement", {"what": "make_training_setup", "device": 0}] in fake.log  # built for the CUDA device
    assert fake.names()[-1] == "empty_cache"


def test_nvmls_own_reason_reaches_the_row_when_it_cannot_say(monkeypatch):
    install_for_test(monkeypatch, FakeCudaConfig(gpus=gpus(1), profile=PROFILE, nvml="init_fails"))
    row = measure_cell(Cell("decoder_only", "test_scale", 1), "cuda", RunOptions(steps=1, warmup=1, dataset=None),
                       collect_environment())
    assert row["status"] == "ok" and row["nvml_process_memory_bytes"] is None
    assert row["driver_version"] is None and unexplained_nulls(row) == []  # the parent's NVML failed too
    for column in ("nvml_process_memory_bytes", "nvml_process_peak_bytes"):
        assert row["null_reasons"][column] == "NVML could not start: NVMLError_DriverNotLoaded: Driver Not Loaded"


def test_a_cuda_cell_that_fails_before_reading_its_device_still_explains_every_null(monkeypatch):
    """A CUDA error at the first call (a lost device, an ECC error) is an error row, not a crashed sweep."""
    install_for_test(monkeypatch, FakeCudaConfig(gpus=gpus(1), profile=PROFILE))

    def lost(device=None):
        raise RuntimeError("CUDA error: unspecified launch failure")

    monkeypatch.setattr("torch.cuda.get_device_name", lost)
    row = measure_cell(Cell("decoder_only", "test_scale", 1), "cuda", RunOptions(dataset=None), collect_environment())
    assert row["status"] == "error" and "unspecified launch failure" in row["error"]
    assert unexplained_nulls(row) == []


def run_on_fake_gpu(tmp_path, *args, config: FakeCudaConfig, env=None):
    """`python -m cadbench ARGS` with the fake CUDA layer in the parent and in every cell process."""
    log_dir = tmp_path / "fake-logs"
    log_dir.mkdir(exist_ok=True)
    config.log_dir = str(log_dir)
    config_file = tmp_path / "fake-cuda.json"
    config_file.write_text(config.to_json())
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS / "fakecuda"), str(TESTS / "plugins")]),
                   "CADBENCH_FAKE_CUDA": str(config_file), **(env or {})}
    result = subprocess.run([sys.executable, "-m", "cadbench", *args], capture_output=True, text=True,
                            env=environment, timeout=600, cwd=env.get("CWD") if env else None)
    logs = {int(path.stem): json.loads(path.read_text()) for path in log_dir.glob("*.json")}
    return result, logs


def cell_logs(logs):
    """The logs of the cell processes (python -m cadbench.harness.measure_cell), in the order they ran."""
    cells = [log for log in logs.values() if "cadbench.harness.measure_cell" in " ".join(log["argv"])
             or log["argv"][0].endswith("measure_cell.py")]
    return sorted(cells, key=lambda log: json.loads(log["argv"][1])["cell"]["batch_size"], reverse=True)


def test_out_of_memory_is_a_row_and_the_sweep_goes_on_in_a_fresh_process_on_a_remapped_gpu(tmp_path):
    out = tmp_path / "out"
    config = FakeCudaConfig(gpus=gpus(4, total_memory=4 * GiB), context_bytes=CONTEXT, profile=PROFILE)
    result, logs = run_on_fake_gpu(
        tmp_path, "run", "--device", "cuda", "--methods", "decoder_only", "--backbone", "test_scale",
        "--batch-sizes", "8,1", "--steps", "2", "--warmup", "1", "--train-steps", "2", "--no-progress",
        "--out", str(out), config=config, env={"CUDA_VISIBLE_DEVICES": "3"})
    assert result.returncode == 0, result.stderr
    rows = {row["batch_size"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert rows[8]["status"] == "oom" and rows[8]["error"] == "CUDA out of memory at batch size 8"
    ok = rows[1]
    assert ok["status"] == "ok" and ok["memory_source"] == "cuda"
    assert ok["peak_memory_bytes"] == steady_peak(1)
    reserved = steady_peak(1) + PROFILE.first_step_extra_bytes
    assert ok["nvml_process_peak_bytes"] == CONTEXT + reserved  # found as physical GPU 3 in the cell's process
    assert 0 <= ok["iou"] <= 1 and ok["train_steps"] == 2  # the quality phase asked for the CUDA device too
    assert ok["gpu_name"] == "NVIDIA Fake H100 80GB HBM3" and ok["driver_version"] == "570.86.15"

    oom_cell, ok_cell = cell_logs(logs)
    assert len(logs) == 3  # the sweep's parent and one fresh process per cell
    oom_names = [name for name, _ in oom_cell["log"]]
    assert oom_names.count("launch") == 1 and "reset_peak_memory_stats" not in oom_names  # died in warm-up
    assert oom_names[-1] == "empty_cache"  # the OOM handler gave the cache back
    ok_names = [name for name, _ in ok_cell["log"]]
    launches = [detail["n"] for name, detail in ok_cell["log"] if name == "launch"]
    assert launches == [1, 2, 3]  # a fresh device: its first launch is the warm-up, nothing left from batch 8
    assert ok_names.index("reset_peak_memory_stats") > ok_names.index("launch")
    assert {detail for name, detail in ok_cell["log"] if name == "nvml.processes"} == {3}
    assert ["placement", {"what": "prepare", "device": 0}] in ok_cell["log"]


def test_a_cuda_call_the_fake_does_not_model_fails_the_cell_loudly(tmp_path):
    """The fake's gaps surface as a dead cell, never as a quietly plausible row."""
    out = tmp_path / "out"
    config = FakeCudaConfig(gpus=gpus(1), profile=PROFILE)
    result, _ = run_on_fake_gpu(
        tmp_path, "run", "--device", "cuda", "--methods", "unmodelled_cuda", "--backbone", "test_scale",
        "--batch-sizes", "1", "--steps", "1", "--warmup", "0", "--no-quality", "--no-progress", "--out", str(out),
        config=config)
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["status"] == "error"
    assert "FakeCudaError: torch.cuda.memory_allocated is not modelled" in row["error"]
