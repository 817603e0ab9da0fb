"""`cadbench run`: isolation of failing cells, resume after a kill, the results contract, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import cadbench
from cadbench.harness.results.documents import load_results
from cadbench.harness.results.rows import contract_columns
from cadbench_in_process import cadbench_main, cells_measured_here
from proc_table import alive, children

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(autouse=True)
def _plugins(plugin_methods):
    """Every test here may name the misbehaving test methods, in this process or in the ones it starts."""


def read_rows(out: Path) -> dict:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return {row["method"]: row for row in rows}


def test_failing_cells_are_results_and_the_sweep_goes_on(tmp_path):
    """The cells under test get a process each (a crash, an OOM, a raise); the sweep that outlives them runs here,
    and so does the cell that only has to be measured after them (decoder_only: no process of its own to test)."""
    out = tmp_path / "out"
    with cells_measured_here(except_methods=("raising", "oom", "crashing")):
        result = cadbench_main("run", "--methods", "raising,oom,crashing,decoder_only", "--backbone", "test_scale",
                               "--batch-sizes", "2", "--device", "cpu", "--steps", "2", "--warmup", "1",
                               "--train-steps", "2", "--no-progress", "--out", str(out))
    assert result.returncode == 1, result.stderr  # some cell errored
    rows = read_rows(out)
    assert rows["oom"]["status"] == "oom"
    assert rows["raising"]["status"] == "error"
    assert rows["raising"]["error"] == "RuntimeError: deliberate failure in the forward pass"
    assert rows["crashing"]["status"] == "error" and "exited with code 3" in rows["crashing"]["error"]
    ok = rows["decoder_only"]
    assert ok["status"] == "ok" and ok["throughput_source"] == "cpu" and ok["throughput_img_s"] > 0
    assert ok["memory_source"] == "estimated" and ok["peak_memory_bytes"] > 0
    assert 0 <= ok["iou"] <= 1 and 0 <= ok["dice"] <= 1 and ok["train_steps"] == 2
    assert ok["quality_dataset"].startswith("synthetic")
    curves = json.loads((out / "loss_curves.json").read_text())
    assert len(curves["decoder_only/test_scale/2/fp32"]["losses"]) == 2
    assert "decoder_only/test_scale/2/fp32" in json.loads((out / "timelines.json").read_text())
    for path in out.glob("*.json"):  # strict JSON: no NaN or Infinity tokens
        json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(f"{path.name} holds {token}"))
    for row in rows.values():
        assert set(row) == set(contract_columns())
        for column, value in row.items():
            if value is None and column != "error":
                assert row["null_reasons"].get(column), (row["method"], column)
    assert "Traceback" not in result.stderr


def test_a_killed_sweep_keeps_finished_cells_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ("estimate", "--methods", "decoder_only,slow", "--backbone", "test_scale", "--batch-sizes", "1",
            "--no-progress", "--out", str(out))
    environment = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    process = subprocess.Popen([sys.executable, "-m", "cadbench", *args], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "results.jsonl").exists() or not (out / "results.jsonl").read_text().strip():
            assert time.monotonic() < deadline and process.poll() is None, "first cell never finished"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert set(read_rows(out)) == {"decoder_only"}
    first = read_rows(out)["decoder_only"]

    monkeypatch.setenv("CADBENCH_TEST_SLOW", "0")
    resumed = cadbench_main(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 cell estimated, 1 already finished" in resumed.stdout
    rows = read_rows(out)
    assert set(rows) == {"decoder_only", "slow"} and rows["decoder_only"] == first
    assert rows["slow"]["status"] == "ok"
    assert len(load_results(out)) == 2 and len(pd.read_csv(out / "results.csv")) == 2


def test_python_api_returns_the_results_as_a_dataframe(tmp_path):
    with cells_measured_here():  # the cell process is tested above
        frame = cadbench.run(methods=["decoder_only", "cad"], backbones=["test_scale"], batch_sizes=[1],
                             device="cpu", steps=2, warmup=1, dataset=None, out=tmp_path / "api",
                             show_progress=False, print_summary=False)
    assert list(frame["method"]) == ["decoder_only", "cad"] or set(frame["method"]) == {"decoder_only", "cad"}
    assert (frame["status"] == "ok").all()
    assert (frame["weights"] == "random").all()
    reloaded = cadbench.load_results(tmp_path / "api")
    assert list(reloaded["peak_memory_bytes"]) == list(frame["peak_memory_bytes"])


def _existing_results(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"precious": true}\n')
    return out


@pytest.mark.parametrize("args, message", [
    (["--methods", "cad,nope"], "unknown method 'nope'; valid: cad, crashing, decoder_only, full, lora, oom, peft"),
    (["--methods", "cad,lora:rank=0"], "method lora: option rank=0: must be a positive integer"),
    (["--backbone", "vit_x"], "unknown backbone 'vit_x'; valid: litemedsam, sam2.1_hiera_b+, sam2.1_hiera_l, "
                              "sam2.1_hiera_s, sam2.1_hiera_t, sam2_test_scale, test_scale, vit_b, vit_h, vit_l"),
    (["--precision", "fp8"], "unknown precision 'fp8'; valid: bf16, fp16, fp32"),
    (["--batch-sizes", "2,0"], "batch size must be a positive integer, got 0"),
    (["--batch-sizes", "two"], "batch sizes must be integers, got 'two'"),
    (["--steps", "0"], "--steps must be positive"),
    (["--alloc-conf", "max_split_size_mb:8"], "--alloc-conf: allocator setting max_split_size_mb: must be at least 20"),
    (["--baseline-method", "sam_adapter", "--methods", "cad"], "--baseline-method 'sam_adapter' is not among"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_lost(tmp_path, args, message):
    out = _existing_results(tmp_path)
    result = cadbench_main("run", "--backbone", "test_scale", *args, "--out", str(out), "--no-progress")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert (out / "results.jsonl").read_text() == '{"precious": true}\n'


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path):
    result = cadbench_main("run", "--backbone", "test_scale", "--device", "cuda", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "no CUDA device" in result.stderr and result.stderr.count("\n") == 1


def test_unwritable_out_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cadbench_main("estimate", "--backbone", "test_scale", "--out", str(blocker / "out"))
    assert result.returncode == 2 and "is not writable" in result.stderr and str(blocker) in result.stderr
    assert result.stderr.count("\n") == 1


def test_checkpoint_for_the_wrong_backbone_is_refused_before_anything_runs(tmp_path):
    from cadbench.backbones import build_sam

    checkpoint = tmp_path / "test_scale.pth"
    torch.save(build_sam("test_scale").sam.state_dict(), checkpoint)
    out = _existing_results(tmp_path)
    result = cadbench_main("run", "--backbone", "vit_b", "--checkpoint", str(checkpoint), "--out", str(out))
    assert result.returncode == 2 and "does not match backbone vit_b" in result.stderr
    assert result.stderr.count("\n") == 1
    assert (out / "results.jsonl").read_text() == '{"precious": true}\n'
    several = cadbench_main("run", "--backbone", "vit_b,vit_l", "--checkpoint", str(checkpoint), "--out", str(out))
    assert several.returncode == 2 and "fits one backbone" in several.stderr


def test_resuming_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "out"
    common = ("--methods", "decoder_only", "--backbone", "test_scale", "--batch-sizes", "1", "--device", "cpu",
              "--warmup", "1", "--no-quality", "--no-progress", "--out", str(out))
    with cells_measured_here():
        assert cadbench_main("run", "--steps", "2", *common).returncode == 0
    before = (out / "results.jsonl").read_text()
    other = cadbench_main("run", "--steps", "3", *common)
    assert other.returncode == 2 and "different settings (steps)" in other.stderr
    assert (out / "results.jsonl").read_text() == before


# -- reliability (issue 9) ------------------------------------------------------------------------------------------

ESTIMATE_ONE = ("estimate", "--methods", "decoder_only", "--backbone", "test_scale", "--batch-sizes", "1",
                "--no-progress")


def _journal_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _wait_for(condition, process, what, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and process.poll() is None, f"{what} never happened"
        time.sleep(0.1)


def test_a_sweep_killed_mid_write_resumes_from_a_torn_journal_and_loses_no_row(tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ("estimate", "--methods", "decoder_only,slow,cad", "--backbone", "test_scale", "--batch-sizes", "1",
            "--no-progress", "--out", str(out))
    process = subprocess.Popen([sys.executable, "-m", "cadbench", *args],
                               env={**os.environ, "PYTHONPATH": str(PLUGINS)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (out / "results.jsonl").exists() and (out / "results.jsonl").read_text().endswith("\n"),
                  process, "the first row")
    finally:
        process.kill()  # kill -9 while the slow cell runs
        process.wait()
    first = _journal_rows(out)[0]
    # the kill came while the slow cell's row was being written: its line is cut short
    with open(out / "results.jsonl", "a") as handle:
        handle.write(json.dumps({**first, "method": "slow"})[:57])

    monkeypatch.setenv("CADBENCH_TEST_SLOW", "0")
    resumed = cadbench_main(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 cells estimated, 1 already finished" in resumed.stdout
    assert "results.jsonl ended in a line cut short" in resumed.stderr and "Traceback" not in resumed.stderr
    journal = _journal_rows(out)  # every line parses: nothing was appended onto the fragment
    assert [row["method"] for row in journal] == ["decoder_only", "slow", "cad"] and journal[0] == first
    assert set(read_rows(out)) == {"decoder_only", "slow", "cad"}
    assert len(pd.read_csv(out / "results.csv")) == 3
    assert "slow/test_scale/1/fp32" in json.loads((out / "timelines.json").read_text())


def test_a_second_run_on_the_same_out_is_refused_naming_the_folder_and_the_pid(tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ("estimate", "--methods", "slow", "--backbone", "test_scale", "--batch-sizes", "1", "--no-progress",
            "--out", str(out))
    first = subprocess.Popen([sys.executable, "-m", "cadbench", *args],
                             env={**os.environ, "PYTHONPATH": str(PLUGINS)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = out / ".cadbench.lock"
        _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), first, "the lock")
        monkeypatch.setenv("CADBENCH_TEST_SLOW", "0")
        second = cadbench_main(*args)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert f"--out {out} is in use by another cadbench run (PID {first.pid})" in second.stderr
        assert not (out / "results.jsonl").exists()  # the second run measured nothing
    finally:
        first.kill()  # dies holding the lock
        first.wait()
    third = cadbench_main(*args)
    assert third.returncode == 0, third.stderr  # a dead holder blocks no one
    assert [row["method"] for row in _journal_rows(out)] == ["slow"]
    assert not (out / ".cadbench.lock").exists()


def _take_sigint_as_a_terminal_would() -> None:
    """In the run's process before exec: SIGINT handled by default, as for a command started in a terminal. Tests
    started from a background job (`pytest ... &` in a script) inherit SIGINT ignored, as POSIX shells make it for
    background jobs; Python then installs no KeyboardInterrupt handler, and the run rightly ignores the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the cell process through /proc")
@pytest.mark.parametrize("signal_number, exit_code, name", [(signal.SIGTERM, 143, "SIGTERM"),
                                                            (signal.SIGINT, 130, "SIGINT")])
def test_a_stop_signal_kills_the_cell_process_records_nothing_and_leaves_no_temporary_folder(
        tmp_path, signal_number, exit_code, name):
    out, temporary = tmp_path / "out", tmp_path / "tmp"
    temporary.mkdir()
    args = ("run", "--methods", "slow", "--backbone", "test_scale", "--batch-sizes", "1", "--device", "cpu",
            "--steps", "1", "--warmup", "0", "--no-quality", "--no-progress", "--out", str(out))
    process = subprocess.Popen([sys.executable, "-m", "cadbench", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_take_sigint_as_a_terminal_would,
                               env={**os.environ, "PYTHONPATH": str(PLUGINS), "TMPDIR": str(temporary)})
    try:
        _wait_for(lambda: any(temporary.glob("cadbench-cell-*")) and children(process.pid), process,
                  "the cell process")
        cell_process = children(process.pid)[0]
        time.sleep(1)
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == exit_code, stderr
    assert stderr.count("\n") == 1 and name in stderr and "Traceback" not in stderr
    assert not alive(cell_process)
    assert [path.name for path in temporary.iterdir() if path.name.startswith("cadbench-")] == []  # torch may
    # leave its own (empty) torchinductor cache folder there; the cell's folder must be gone
    assert not (out / "results.jsonl").exists() or (out / "results.jsonl").read_text() == ""
    assert not (out / ".cadbench.lock").exists()


def test_a_damaged_side_file_costs_no_row(tmp_path):
    out = tmp_path / "out"
    assert cadbench_main(*ESTIMATE_ONE, "--out", str(out)).returncode == 0
    (out / "timelines.json").write_text("{broken")
    (out / "results.json").write_text("{broken too")
    more = ("estimate", "--methods", "decoder_only,cad", "--backbone", "test_scale", "--batch-sizes", "1",
            "--no-progress", "--out", str(out))
    result = cadbench_main(*more)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "timelines.json" in result.stderr
    assert set(read_rows(out)) == {"decoder_only", "cad"}
    assert set(json.loads((out / "timelines.json").read_text())) == {"decoder_only/test_scale/1/fp32",
                                                                     "cad/test_scale/1/fp32"}


@pytest.mark.parametrize("damage, message", [
    (lambda out: (out / "run.json").write_text("{x"), "run.json was unreadable; restored"),
    (lambda out: open(out / "results.jsonl", "a").write(
        '{"method": "cad", "backbone": "test_scale", "batch_size": 1, "precision": "fp32"}\n'),
     "results.jsonl line 2: not a result row (no 'status')"),
])
def test_damaged_run_files_give_one_line_and_no_traceback(tmp_path, damage, message):
    out = tmp_path / "out"
    assert cadbench_main(*ESTIMATE_ONE, "--out", str(out)).returncode == 0
    damage(out)
    result = cadbench_main(*ESTIMATE_ONE, "--out", str(out))
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", "100000"], "batch size 100000 is above 512, the largest the estimator replays"),
    (["--batch-sizes", "1,,2"], "empty item in '1,,2'"),
    (["--batch-sizes", "1,2,"], "empty item in '1,2,'"),
    (["--methods", "cad,,decoder_only"], "empty item"),
])
def test_estimates_refuse_unbounded_or_malformed_batch_sizes_in_one_line(tmp_path, args, message):
    out = _existing_results(tmp_path)
    result = cadbench_main("estimate", "--backbone", "test_scale", *args, "--out", str(out), "--no-progress")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert (out / "results.jsonl").read_text() == '{"precious": true}\n'
