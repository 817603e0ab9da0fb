"""`cadbench run --gpus`: up to one cell per GPU at a time, each cell process pinned to its GPU, every row persisted
once by the parent. No GPU here: the GPUs are the fake CUDA layer's (tests/fakecuda), installed in the sweep's
process and in each cell process, which sees only the GPU its CUDA_VISIBLE_DEVICES names."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cadbench.errors import CadbenchError
from cadbench.harness.launchers import GpusConfig, available_launchers, get_launcher
from cadbench_fakecuda import MiB, FakeCudaConfig, StepProfile, gpus, install_for_test
from cadbench_in_process import cadbench_main
from proc_table import alive, children

TESTS = Path(__file__).parent
NAMES = ["NVIDIA Fake A100 40GB", "NVIDIA Fake H100 80GB", "NVIDIA Fake L4", "NVIDIA Fake H200"]
FOUR_GPUS = [replace(gpu, name=name) for gpu, name in zip(gpus(4), NAMES)]
SMALL_STEP = StepProfile(weights_bytes=64 * MiB, optimizer_bytes=64 * MiB, bytes_per_image=32 * MiB,
                         first_step_extra_bytes=0, seconds_per_image=0.01)


def run_cadbench(tmp_path, *args, fake: FakeCudaConfig | None = None, env=None, popen=False):
    """`python -m cadbench ARGS` with the test plugins, and the fake CUDA layer in every process when `fake`."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS / "fakecuda"), str(TESTS / "plugins")]),
                   **(env or {})}
    environment.pop("CUDA_VISIBLE_DEVICES", None)
    if fake is not None:
        fake.log_dir = str(tmp_path / "fake-logs")
        Path(fake.log_dir).mkdir(exist_ok=True)
        config_file = tmp_path / "fake-cuda.json"
        config_file.write_text(fake.to_json())
        environment["CADBENCH_FAKE_CUDA"] = str(config_file)
    command = [sys.executable, "-m", "cadbench", *args]
    if popen:
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)


def journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_launchers_are_found_by_name_and_an_unknown_one_is_one_line():
    assert available_launchers() == ("local", "gpus", "slurm")
    assert get_launcher("gpus").NAME == "gpus"
    with pytest.raises(CadbenchError, match=r"unknown launcher 'ssh'; valid: gpus, local, slurm"):
        get_launcher("ssh")


@pytest.mark.parametrize("text, message", [("0,0", "names GPU 0 twice"), ("1,x", "got 'x'"), ("-1", "got '-1'")])
def test_a_malformed_gpu_list_is_refused_naming_the_culprit(text, message):
    with pytest.raises(CadbenchError, match=message):
        GpusConfig.parse(text)
    assert GpusConfig.parse("all").gpus is None and GpusConfig.parse("3, 1").gpus == (3, 1)


def test_cpu_cells_run_two_at_a_time_each_pinned_to_its_own_gpu_and_every_row_is_kept_once(tmp_path):
    meeting, out = tmp_path / "meeting", tmp_path / "out"
    meeting.mkdir()
    result = run_cadbench(
        tmp_path, "run", "--device", "cpu", "--gpus", "1,3", "--methods", "rendezvous", "--backbone", "test_scale",
        "--batch-sizes", "1,2,3,4", "--steps", "1", "--warmup", "0", "--no-quality", "--no-progress",
        "--out", str(out), fake=FakeCudaConfig(gpus=FOUR_GPUS),
        env={"CADBENCH_TEST_RENDEZVOUS": str(meeting), "CADBENCH_TEST_RENDEZVOUS_N": "2"})
    assert result.returncode == 0, result.stderr
    rows = journal(out)
    assert sorted(row["batch_size"] for row in rows) == [1, 2, 3, 4]  # each cell once, none lost
    seen = {record["batch_size"]: record for record in map(json.loads, map(Path.read_text, meeting.glob("*.json")))}
    assert sorted(seen) == [1, 2, 3, 4]
    for row in rows:
        assert row["status"] == "ok" and row["throughput_source"] == "cpu"
        index = row["gpu_index"]
        assert index in (1, 3) and "gpu_index" not in row["null_reasons"]
        assert row["gpu_name"] == NAMES[index]  # the GPU the cell was pinned to, not the parent's first
        assert seen[row["batch_size"]]["visible"] == f"GPU-{FOUR_GPUS[index].uuid}"  # what its process saw
    assert all(record["met"] for record in seen.values())  # two cells were in flight at once
    for index in (1, 3):  # ... but never two on one GPU
        spans = sorted((seen[row["batch_size"]]["start"], seen[row["batch_size"]]["end"]) for row in rows
                       if row["gpu_index"] == index)
        assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:]))
    assert {row["gpu_index"] for row in rows} == {1, 3}
    assert [row["batch_size"] for row in json.loads((out / "results.json").read_text())["rows"]] != []


def test_cuda_cells_are_measured_on_the_gpu_they_were_pinned_to(tmp_path):
    out = tmp_path / "out"
    result = run_cadbench(
        tmp_path, "run", "--device", "cuda", "--gpus", "0,2", "--methods", "decoder_only", "--backbone",
        "test_scale", "--batch-sizes", "1,2", "--steps", "2", "--warmup", "1", "--no-quality", "--no-progress",
        "--out", str(out), fake=FakeCudaConfig(gpus=FOUR_GPUS, profile=SMALL_STEP))
    assert result.returncode == 0, result.stderr
    rows = journal(out)
    assert len(rows) == 2
    logs = [json.loads(path.read_text()) for path in (tmp_path / "fake-logs").glob("*.json")]
    cells = {json.loads(log["argv"][1])["cell"]["batch_size"]: log for log in logs
             if "measure_cell" in " ".join(log["argv"])}
    for row in rows:
        assert row["status"] == "ok" and row["memory_source"] == "cuda"
        assert row["device"] == row["gpu_name"] == NAMES[row["gpu_index"]]
        nvml_gpus = {detail for name, detail in cells[row["batch_size"]]["log"] if name == "nvml.processes"}
        assert nvml_gpus == {row["gpu_index"]}  # NVML found the cell's process on the pinned physical GPU


def test_a_gpu_that_does_not_exist_is_refused_before_anything_runs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    install_for_test(monkeypatch, FakeCudaConfig(gpus=FOUR_GPUS))  # in this process: nothing runs anywhere else
    result = cadbench_main("run", "--gpus", "0,7", "--backbone", "test_scale", "--methods", "cad", "--out", out)
    assert result.returncode == 2
    assert result.stderr == "cadbench: error: --gpus names GPU 7, which does not exist; PyTorch sees GPUs 0-3\n"
    assert not out.exists()


def test_gpus_on_a_machine_without_a_gpu_is_refused(tmp_path, monkeypatch):
    install_for_test(monkeypatch, FakeCudaConfig(gpus=[]))  # no GPU, whatever this machine has
    result = cadbench_main("run", "--gpus", "all", "--backbone", "test_scale", "--methods", "cad",
                           "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr == "cadbench: error: --gpus all: PyTorch sees no CUDA GPU on this machine\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the cell processes through /proc")
def test_a_stop_kills_every_running_cell_process_and_records_nothing_half_done(tmp_path):
    out, temporary = tmp_path / "out", tmp_path / "tmp"
    temporary.mkdir()
    process = run_cadbench(
        tmp_path, "run", "--device", "cpu", "--gpus", "0,1", "--methods", "slow", "--backbone", "test_scale",
        "--batch-sizes", "1,2", "--steps", "1", "--warmup", "0", "--no-quality", "--no-progress", "--out", str(out),
        fake=FakeCudaConfig(gpus=FOUR_GPUS), env={"TMPDIR": str(temporary)}, popen=True)
    try:
        deadline = time.monotonic() + 240
        while len(children(process.pid)) < 2 or len(list(temporary.glob("cadbench-cell-*"))) < 2:
            assert time.monotonic() < deadline and process.poll() is None, "two cell processes never ran"
            time.sleep(0.2)
        cells = children(process.pid)
        time.sleep(1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr
    assert stderr.count("\n") == 1 and "SIGTERM" in stderr
    assert not any(alive(pid) for pid in cells)
    assert not list(temporary.glob("cadbench-cell-*"))
    assert not (out / "results.jsonl").exists() or (out / "results.jsonl").read_text() == ""


