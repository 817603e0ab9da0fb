"""`cadbench run --launcher slurm` on a real single-node Slurm (tests/local_slurm.py, started once for this file):
rows equal a local run's, --detach then a resume collects them, a cancelled job becomes an error row and is
resubmitted, and `cadbench merge` of two partial runs equals a full run. Bad input is refused before anything is
submitted. Skipped, with the reason, where Slurm's daemons are not installed; CI installs them and fails if these
tests were skipped."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cadbench_in_process import cadbench_main, cells_measured_here
from local_slurm import LocalSlurm, SlurmUnavailable, why_unavailable

from cadbench.errors import CadbenchError
from cadbench.harness.launchers.slurm.config import SlurmConfig, slurm_time_minutes
from cadbench.measure.cpu_allocator import cell_process_environment, describe_cpu

TESTS = Path(__file__).parent
GRID = ("--device", "cpu", "--backbone", "test_scale", "--batch-sizes", "1", "--steps", "1", "--warmup", "0",
        "--train-steps", "2", "--no-progress")
TIMING_COLUMNS = {"throughput_img_s", "step_time_median_s", "step_time_p90_s"}
WHERE_COLUMNS = {"slurm_job_id", "slurm_state", "slurm_log"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (SlurmUnavailable, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        pytest.fail(f"the local Slurm did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def cadbench_process(*args, env):
    """`python -m cadbench ARGS` started and left running, with the test methods installed as plugins: for the test
    that cancels the job under a waiting run. Everything else runs the CLI in this process (`cadbench_main`)."""
    environment = {**os.environ, "PYTHONPATH": str(TESTS / "plugins"), **env}
    return subprocess.Popen([sys.executable, "-m", "cadbench", *args], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def on_slurm(slurm, monkeypatch):
    """Slurm's commands, in this process and the ones it starts, reach the local cluster."""
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    return slurm


def rows(out: Path) -> dict[str, dict]:
    return {row["method"]: row for row in json.loads((out / "results.json").read_text())["rows"]}


def comparable(row: dict) -> dict:
    """A row without its timings and the columns that say where it ran, and its device without the malloc tunables
    its process started with (cadbench.measure.cpu_allocator: a cell process on the CPU gets them, as a Slurm job's
    does; the local reference runs its cells in this process, which started without them)."""
    kept = {column: value for column, value in row.items() if column not in TIMING_COLUMNS | WHERE_COLUMNS}
    kept["device"] = row["device"].split(" (GLIBC_TUNABLES=")[0]
    kept["null_reasons"] = {column: reason for column, reason in row["null_reasons"].items()
                            if column not in TIMING_COLUMNS | WHERE_COLUMNS}
    return kept


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reference: the same grid, measured by the local launcher (each cell in this process: a Slurm job runs
    its cell in a process of its own, and the rows must not tell them apart)."""
    out = tmp_path_factory.mktemp("local") / "out"
    with cells_measured_here():
        result = cadbench_main("run", *GRID, "--methods", "decoder_only,cad", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_a_slurm_sweep_gives_the_rows_a_local_run_gives(on_slurm, local_run, tmp_path):
    out = tmp_path / "out"
    result = cadbench_main("run", *GRID, "--methods", "decoder_only,cad", "--launcher", "slurm", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "submitted 2 cells to Slurm as job " in result.stdout
    measured, reference = rows(out), rows(local_run)
    assert set(measured) == {"decoder_only", "cad"}
    for method, row in measured.items():
        assert row["status"] == "ok" and 0 <= row["iou"] <= 1
        assert comparable(row) == comparable(reference[method])
        # the job's cell process started with the malloc tunables of a CPU cell, and its row says so
        assert row["device"] == describe_cpu(cell_process_environment({}))
        assert row["slurm_job_id"].count("_") == 1 and Path(row["slurm_log"]).is_file()
        assert "Job completed successfully" in Path(row["slurm_log"]).read_text()
        assert row["slurm_state"] is None and "sacct -j" in row["null_reasons"]["slurm_state"]
    assert json.loads((out / "slurm" / "jobs.json").read_text())["jobs"] == []  # nothing left to reconnect to


def test_detach_prints_the_job_ids_and_a_later_run_collects_their_rows(on_slurm, tmp_path):
    out = tmp_path / "out"
    args = ("run", *GRID, "--no-quality", "--methods", "decoder_only,cad", "--launcher", "slurm", "--out", str(out))
    detached = cadbench_main(*args, "--detach")
    assert detached.returncode == 0, detached.stderr
    recorded = [job["job_id"] for job in json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]]
    assert len(recorded) == 2
    assert f"2 Slurm jobs still running or queued: {' '.join(recorded)}" in detached.stdout
    collected = cadbench_main(*args)
    assert collected.returncode == 0, collected.stderr
    assert "submitted" not in collected.stdout  # collected, not submitted again
    assert sorted(row["slurm_job_id"] for row in rows(out).values()) == sorted(recorded)
    assert all(row["status"] == "ok" for row in rows(out).values())


def test_a_cancelled_job_becomes_an_error_row_and_the_next_run_resubmits_it(on_slurm, tmp_path, plugin_methods,
                                                                             monkeypatch):
    slurm = on_slurm
    out = tmp_path / "out"
    args = ("run", *GRID, "--no-quality", "--methods", "slow", "--launcher", "slurm", "--out", str(out))
    waiting = cadbench_process(*args, env={**slurm.env, "CADBENCH_TEST_SLOW": "1"})
    try:
        deadline = time.monotonic() + 120
        job_id = None
        while job_id is None or "RUNNING" not in slurm.run("squeue", "--noheader", f"--jobs={job_id}",
                                                           "--format=%T", check=False).stdout:
            if waiting.poll() is not None:  # it stopped before the job ran: say what it said
                pytest.fail(f"the run exited {waiting.returncode} before its job ran: {waiting.communicate()[1]}")
            assert time.monotonic() < deadline, "the job never ran"
            records = out / "slurm" / "jobs.json"
            if records.exists() and json.loads(records.read_text())["jobs"]:
                job_id = json.loads(records.read_text())["jobs"][0]["job_id"]
            time.sleep(0.5)
        slurm.run("scancel", job_id)
        _, stderr = waiting.communicate(timeout=180)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 1, stderr  # a cell errored
    row = rows(out)["slow"]
    assert row["status"] == "error" and row["slurm_state"] == "CANCELLED" and row["slurm_job_id"] == job_id
    # whether Slurm's signal reached the cell's process before the job ended depends on timing: both say so
    assert row["error"].startswith(f"Slurm job {job_id} ended CANCELLED ")
    assert row["error"].endswith(f"log: {row['slurm_log']}")
    assert Path(row["slurm_log"]).is_file()

    monkeypatch.setenv("CADBENCH_TEST_SLOW", "0")
    again = cadbench_main(*args)
    assert again.returncode == 0, again.stderr
    row = rows(out)["slow"]
    assert row["status"] == "ok" and row["slurm_job_id"] != job_id


def test_a_folder_merged_from_two_partial_runs_equals_a_full_run(slurm, local_run, tmp_path, monkeypatch):
    on_slurm, here, merged = tmp_path / "slurm", tmp_path / "here", tmp_path / "merged"
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    first = cadbench_main("run", *GRID, "--methods", "decoder_only", "--launcher", "slurm", "--out", str(on_slurm))
    assert first.returncode == 0, first.stderr
    with cells_measured_here():
        second = cadbench_main("run", *GRID, "--methods", "cad", "--out", str(here))
    assert second.returncode == 0, second.stderr
    result = cadbench_main("merge", str(merged), str(on_slurm), str(here))
    assert result.returncode == 0, result.stderr
    assert f"merged 2 folders into {merged}/: 2 cells (2 rows added)" in result.stdout
    full, combined = rows(local_run), rows(merged)
    assert set(combined) == set(full)
    for method, row in combined.items():
        assert comparable(row) == comparable(full[method])
    assert (merged / "index.html").is_file()
    assert json.loads((merged / "run.json").read_text())["config"] == \
        json.loads((local_run / "run.json").read_text())["config"]
    curves = json.loads((merged / "loss_curves.json").read_text())
    assert set(curves) == {"decoder_only/test_scale/1/fp32", "cad/test_scale/1/fp32"}


def test_an_unknown_partition_is_refused_before_anything_is_submitted(on_slurm, tmp_path):
    out = tmp_path / "out"
    result = cadbench_main("run", *GRID, "--methods", "cad", "--launcher", "slurm", "--slurm-partition", "gpu",
                           "--out", str(out))
    assert result.returncode == 2
    assert result.stderr == "cadbench: error: unknown Slurm partition 'gpu'; valid: debug\n"
    assert not out.exists()


def test_a_job_sbatch_refuses_is_one_line_and_nothing_is_recorded(on_slurm, tmp_path):
    """This cluster has no GPU: a CUDA cell's job asks for one, which sbatch refuses."""
    out = tmp_path / "out"
    result = cadbench_main("run", *GRID, "--methods", "cad", "--launcher", "slurm", "--device", "cuda", "--out",
                           str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("cadbench: error: sbatch refused the jobs of 1 cell: ")
    assert result.stderr.count("\n") == 1
    assert not (out / "slurm" / "jobs.json").exists() and not (out / "results.jsonl").exists()


def test_slurm_without_sbatch_on_the_path_is_refused_in_one_line(tmp_path, monkeypatch):
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    result = cadbench_main("run", *GRID, "--methods", "cad", "--launcher", "slurm", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("cadbench: error: --launcher slurm needs Slurm's commands on PATH; not found: "
                                    "sbatch, srun, sacct, sinfo, scancel")
    assert not (tmp_path / "out").exists()


def test_slurm_without_submitit_is_refused_in_one_line(tmp_path, monkeypatch):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "submitit.py").write_text("raise ImportError('No module named submitit')\n")
    monkeypatch.syspath_prepend(str(shadow))  # `import submitit` finds the shadow, which fails as a missing one would
    for name in [name for name in sys.modules if name == "submitit" or name.startswith("submitit.")]:
        monkeypatch.delitem(sys.modules, name)
    result = cadbench_main("run", *GRID, "--methods", "cad", "--launcher", "slurm", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == ("cadbench: error: --launcher slurm needs the submitit package: pip install "
                             "'cadbench[slurm]'\n")


@pytest.mark.parametrize("flags, message", [
    (["--slurm-time", "90 min"], "--slurm-time '90 min' is not a Slurm time"),
    (["--slurm-mem", "lots"], "--slurm-mem 'lots' is not a Slurm memory size"),
    (["--slurm-option", "partition=gpu"], "--slurm-option partition: use --slurm-partition for that"),
    (["--slurm-option", "array=0-3"], "--slurm-option array: cadbench sets it itself"),
    (["--slurm-gpus-per-job", "-1"], "--slurm-gpus-per-job must be 0 or more"),
])
def test_bad_slurm_settings_are_refused_in_one_line(tmp_path, flags, message):
    result = cadbench_main("run", *GRID, "--methods", "cad", "--launcher", "slurm", *flags, "--out", tmp_path / "o")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_slurm_flags_without_the_slurm_launcher_are_refused(tmp_path):
    result = cadbench_main("run", *GRID, "--methods", "cad", "--slurm-time", "10", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr == "cadbench: error: --slurm-time needs --launcher slurm\n"


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 2), ("1:30:00", 90), ("2-00", 2880),
                                           ("1-02:03", 1563), ("0-00:00:30", 1), ("INFINITE", 525600)])
def test_slurm_times_in_every_format_sbatch_takes_become_minutes(text, minutes):
    assert slurm_time_minutes(text) == minutes


def test_slurm_options_become_sbatch_parameters_and_bare_keys_are_flags():
    config = SlurmConfig.from_flags(partition="gpu", mem="32G", options=["mail-type=END", "exclusive"],
                                    parallelism=4)
    parameters = config.sbatch_parameters(minutes=60, gpus=2)
    assert parameters["partition"] == "gpu" and parameters["mem"] == "32G" and parameters["time"] == 60
    assert parameters["gpus_per_node"] == 2 and parameters["array_parallelism"] == 4
    assert parameters["additional_parameters"] == {"mail-type": "END", "exclusive": True}
    assert "gpus_per_node" not in config.sbatch_parameters(minutes=60, gpus=0)
    with pytest.raises(CadbenchError, match="must be positive"):
        SlurmConfig(parallelism=0)


def test_a_local_run_refuses_cells_that_recorded_slurm_jobs_may_still_be_measuring(tmp_path):
    out = tmp_path / "out"
    (out / "slurm").mkdir(parents=True)
    cell = {"method": "cad", "backbone": "test_scale", "batch_size": 1, "precision": "fp32"}
    (out / "slurm" / "jobs.json").write_text(json.dumps({"jobs": [
        {"job_id": "41_0", "key": "cad/test_scale/1/fp32", "cell": cell, "mode": "cpu", "submitted": "now"}]}))
    result = cadbench_main("estimate", "--methods", "cad", "--backbone", "test_scale", "--batch-sizes", "1",
                           "--no-progress", "--out", str(out))
    assert result.returncode == 2
    assert result.stderr == (f"cadbench: error: --out {out} has Slurm jobs that may still be measuring 1 of these "
                             f"cells (41_0); resume with --launcher slurm to collect them, or delete "
                             f"{out / 'slurm' / 'jobs.json'} to measure them here anyway\n")
    assert not (out / "results.jsonl").exists() or (out / "results.jsonl").read_text() == ""


def test_estimates_run_in_the_submitting_process_or_as_cpu_jobs_when_asked(on_slurm, tmp_path):
    grid = ("run", "--methods", "decoder_only", "--backbone", "vit_b", "--batch-sizes", "1", "--no-progress",
            "--launcher", "slurm", "--slurm-gpus-per-job", "0")  # no GPU in the jobs: full size is estimated
    here = cadbench_main(*grid, "--out", str(tmp_path / "here"))
    assert here.returncode == 0, here.stderr
    assert "submitted" not in here.stdout
    jobs = cadbench_main(*grid, "--slurm-estimate-jobs", "--out", str(tmp_path / "jobs"))
    assert jobs.returncode == 0, jobs.stderr
    assert "submitted 1 cells to Slurm" in jobs.stdout
    in_process, in_job = rows(tmp_path / "here")["decoder_only"], rows(tmp_path / "jobs")["decoder_only"]
    assert in_process["memory_source"] == in_job["memory_source"] == "estimated"
    assert in_process["slurm_job_id"] is None and in_job["slurm_job_id"] is not None
    assert in_process["peak_memory_bytes"] == in_job["peak_memory_bytes"]


class _FinishedJob:
    """A submitit job whose function returned `row` (its result file exists)."""

    def __init__(self, row: dict, folder: Path) -> None:
        self._row = row
        self.paths = type("Paths", (), {"result_pickle": folder, "stdout": folder / "log.out"})()

    def result(self) -> dict:
        return json.loads(json.dumps(self._row))


@pytest.mark.parametrize("state, expected", [("RUNNING", None), ("CANCELLED", "CANCELLED"), ("COMPLETED", None)])
def test_an_error_row_from_a_job_slurm_killed_waits_for_and_names_slurms_state(tmp_path, state, expected):
    """Slurm's cancel may kill the cell's process first: the job then returns the cell's own error row. That row is
    held back while the job runs, and recorded as the Slurm death it is once Slurm says so; a job that completed
    keeps its cell's error."""
    from cadbench.harness.launchers.local import dead_cell_row
    from cadbench.harness.launchers.slurm.launcher import SlurmLauncher, _Followed
    from cadbench.harness.launchers.slurm.state import JobRecord
    from cadbench.vocabulary.cell import Cell

    cell = Cell("decoder_only", "test_scale", 1, "fp32")
    own = dead_cell_row(cell, {}, "cell process died with signal 15")
    followed = _Followed(JobRecord("7_0", cell.key, cell.as_dict(), "cpu", "now"), cell, _FinishedJob(own, tmp_path))
    followed.state, followed.since = state, time.monotonic()
    outcome = SlurmLauncher(SlurmConfig())._outcome(followed)
    if state == "RUNNING":
        assert outcome is None
    else:
        assert outcome["status"] == "error" and outcome["slurm_state"] == expected
        assert ("ended CANCELLED before its cell finished" in outcome["error"]) == (state == "CANCELLED")
