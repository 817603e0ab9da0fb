"""`--launcher slurm`: the unfinished cells as Slurm array jobs, through submitit (the standard Python client for
Slurm: it writes the sbatch script, pickles the call, and reads job states with sacct).

One array job per kind of resource: cells measured on CUDA ask for `gpus_per_job` GPUs each; cells without CUDA
(and estimates, with `estimate_jobs`) ask for none. Each task runs `job.run_cell_job`, which measures its cell in a
fresh process on the node exactly as the local launcher does, and returns the row; this process collects the rows
(submitit's result pickles) and alone writes them to `--out`.

Reconnecting: every submitted job is recorded in `<out>/slurm/jobs.json` (see `state`) until its row is in the
journal, so a later run with the same --out collects what finished, waits for what still runs, and resubmits what
died. A job that ended without a row (cancelled, timed out, preempted and not requeued, node failure, out of
memory) becomes an error row with its Slurm state and the path of its log; the next run resubmits it, as it retries
every error row.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

from cadbench.errors import CadbenchError, unknown_name_error
from cadbench.harness.launchers.base import CellRun, Launcher, Progress, measure_here, set_columns
from cadbench.harness.launchers.slurm.config import SlurmConfig, slurm_time_minutes
from cadbench.harness.launchers.slurm.state import JobRecord, JobRecords
from cadbench.harness.options import RunContext, RunOptions
from cadbench.vocabulary.cell import Cell

COMMANDS = ("sbatch", "srun", "sacct", "sinfo", "scancel")
COMMAND_TIMEOUT_S = 60
# Slurm states after which a job will not produce a row (PREEMPTED only once it was not requeued: see the grace)
WAITING = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING", "SUSPENDED", "STOPPED",
           "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "UNKNOWN", "READY"}
GRACE_S = {"COMPLETED": 60.0}  # a finished job's result file may reach a shared file system late
DEFAULT_GRACE_S = 10.0  # a requeued PREEMPTED job leaves that state; a cancelled job may have just written its row


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CadbenchError(f"`{' '.join(command)}` did not answer within {COMMAND_TIMEOUT_S} s; is Slurm "
                            f"reachable?") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class SlurmLauncher(Launcher):
    NAME = "slurm"
    config_class = SlurmConfig

    def __init__(self, config: SlurmConfig) -> None:
        super().__init__(config)
        self.minutes: int | None = None
        self.submitted: list[str] = []

    # -- before anything is submitted -----------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse in one line: submitit or Slurm's commands missing, accounting (sacct) off, an unknown partition."""
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise CadbenchError("--launcher slurm needs the submitit package: pip install 'cadbench[slurm]'") from None
        missing = [command for command in COMMANDS if shutil.which(command) is None]
        if missing:
            raise CadbenchError(f"--launcher slurm needs Slurm's commands on PATH; not found: {', '.join(missing)}")
        listed = _run(["sinfo", "--noheader", "--format=%P|%L|%l"])
        if listed.returncode != 0:
            raise CadbenchError(f"sinfo failed: {_last_line(listed.stderr) or listed.returncode}")
        partitions: dict[str, tuple[str, str]] = {}
        default = None
        for line in listed.stdout.splitlines():
            if line.count("|") != 2:
                continue
            name, default_time, max_time = line.split("|")
            if name.endswith("*"):
                name = default = name[:-1]
            partitions[name] = (default_time, max_time)
        partition = self.config.partition or default
        if partition not in partitions:
            if self.config.partition is None:
                raise CadbenchError("this Slurm cluster has no default partition; name one with --slurm-partition")
            raise unknown_name_error("Slurm partition", self.config.partition, partitions)
        if self.config.time is not None:
            self.minutes = slurm_time_minutes(self.config.time)
        else:  # the partition's default time, else its limit: submitit needs a number of minutes
            default_time, max_time = partitions[partition]
            limit = default_time if default_time.lower() not in ("n/a", "") else max_time
            try:
                self.minutes = slurm_time_minutes(limit)
            except ValueError:
                raise CadbenchError(f"partition {partition}'s time limit {limit!r} is unreadable; give "
                                    f"--slurm-time") from None
        accounting = _run(["sacct", "--noheader", "--allocations", "--format=JobID", "--jobs=1"])
        if accounting.returncode != 0:
            raise CadbenchError(f"Slurm's accounting does not answer (sacct: {_last_line(accounting.stderr)}); "
                                f"cadbench follows its jobs with sacct")

    def cuda_where_cells_run(self) -> bool:
        return self.config.gpus_per_job > 0

    def check_folder(self, out_dir: Path, runs: list[CellRun]) -> None:
        """Recorded jobs are this launcher's to reconnect to."""

    # -- the run --------------------------------------------------------------------------------------------------
    def launch(self, runs: list[CellRun], options: RunOptions, context: RunContext, environment: dict, out_dir: Path,
               on_progress: Progress) -> Iterator[tuple[Cell, dict]]:
        import submitit

        if self.minutes is None:
            self.check()
        out_dir = Path(out_dir)
        records = JobRecords.read(out_dir)
        by_key = {run.cell.key: run for run in runs}
        following: dict[str, _Followed] = {}
        for record in records.jobs:
            if record.key in by_key and record.key not in {f.record.key for f in following.values()}:
                job = submitit.SlurmJob(folder=JobRecords.submitit_folder(out_dir), job_id=record.job_id)
                following[record.job_id] = _Followed(record, by_key[record.key].cell, job)
                on_progress("start", by_key[record.key].cell, f"job {record.job_id} (submitted before)")

        def collect(followed: _Followed, outcome: dict) -> Iterator[tuple[Cell, dict]]:
            """Hand the job's row over (the caller journals it), then drop the job from jobs.json."""
            nonlocal records
            records = records.without({followed.record.job_id})
            del following[followed.record.job_id]
            yield followed.cell, outcome
            records.write(out_dir)

        # what earlier runs submitted: collect what finished; what died becomes an error row and is resubmitted
        resubmit: list[CellRun] = []
        collected: set[str] = set()
        if following:
            self._poll_states(following, force=True)
            self._settle(following)
            for followed in list(following.values()):
                outcome = self._outcome(followed)
                if outcome is not None:
                    yield from collect(followed, outcome)
                    if outcome["status"] == "error":
                        resubmit.append(by_key[followed.record.key])
                    else:
                        collected.add(followed.record.key)
        followed_keys = {followed.record.key for followed in following.values()} | collected
        here = [run for run in runs if run.mode == "estimate" and not self.config.estimate_jobs
                and run.cell.key not in followed_keys]
        fresh = [run for run in runs if run not in here and run.cell.key not in followed_keys
                 and run not in resubmit]
        to_submit = resubmit + fresh

        # submit: one array per kind of resource, each recorded before the next is sent
        for gpus, group in ((self.config.gpus_per_job, [run for run in to_submit if run.mode == "cuda"]),
                            (0, [run for run in to_submit if run.mode != "cuda"])):
            if not group:
                continue
            jobs = self._submit(group, gpus, options, context, out_dir)
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            new = [JobRecord(job.job_id, run.cell.key, run.cell.as_dict(), run.mode, now)
                   for run, job in zip(group, jobs)]
            records = JobRecords(records.jobs + new)
            records.write(out_dir)
            for run, job, record in zip(group, jobs, new):
                following[job.job_id] = _Followed(record, run.cell, job)
                self.submitted.append(job.job_id)
                on_progress("start", run.cell, f"job {job.job_id} PENDING")

        for run in here:  # estimates, in this process, while the jobs queue
            on_progress("start", run.cell)
            yield run.cell, measure_here(run, options, context, environment)

        if self.config.detach:
            self.in_flight = sorted(following, key=_job_order)
            return
        started = time.monotonic()
        last_poll = started
        while following:
            interval = min(self.config.poll_seconds, max(2.0, (time.monotonic() - started) / 4))
            if time.monotonic() - last_poll >= interval:
                self._poll_states(following, force=True)
                last_poll = time.monotonic()
            for followed in list(following.values()):
                state = followed.state
                if state != followed.shown:
                    followed.shown = state
                    on_progress("state", followed.cell, f"job {followed.record.job_id} {state}")
                outcome = self._outcome(followed)
                if outcome is not None:
                    yield from collect(followed, outcome)
            if following:
                time.sleep(1.0)

    def _submit(self, group: list[CellRun], gpus: int, options: RunOptions, context: RunContext, out_dir: Path) -> list:
        import submitit

        from cadbench.harness.launchers.slurm.job import run_cell_job

        executor = submitit.SlurmExecutor(folder=JobRecords.submitit_folder(out_dir), max_num_timeout=0)
        executor.update_parameters(**self.config.sbatch_parameters(self.minutes, gpus))
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's complaint as well
                with executor.batch():
                    jobs = [executor.submit(run_cell_job, run.cell, run.mode, options, context) for run in group]
        except Exception as exc:  # noqa: BLE001 — sbatch's refusal, in one line
            lines = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()]
            detail = lines[-1] if lines else _last_line(str(exc)) or type(exc).__name__
            detail = detail.removeprefix("sbatch: error: ")
            cells = f"{len(group)} cell{'s' if len(group) > 1 else ''}"
            raise CadbenchError(f"sbatch refused the jobs of {cells}: {detail}") from None
        return jobs

    def _settle(self, following: dict[str, "_Followed"]) -> None:
        """Wait out the grace of jobs that Slurm says have ended, so that each is either still waiting or has an
        outcome (collected, or dead and resubmitted at once)."""
        while True:
            unsettled = [followed for followed in following.values()
                         if followed.state not in WAITING and self._outcome(followed) is None]
            if not unsettled:
                return
            time.sleep(1.0)

    def _poll_states(self, following: dict[str, "_Followed"], force: bool) -> None:
        """One sacct call for every job followed (submitit's watcher), then each job's state."""
        if not following:
            return
        watcher = next(iter(following.values())).job.watcher
        if force:
            watcher.update()
        now = time.monotonic()
        for followed in following.values():
            state = (watcher.get_state(followed.record.job_id, mode="cache") or "UNKNOWN").split()[0].upper()
            if state != followed.state:
                followed.state = state
                followed.since = now

    def _outcome(self, followed: "_Followed") -> dict | None:
        """The row of a job that ended, or None while it may still produce one."""
        job = followed.job
        if job.paths.result_pickle.exists():
            try:
                row = job.result()
            except Exception as exc:  # noqa: BLE001 — the job's function raised (a timeout's signal, say)
                if followed.state in WAITING:
                    return None  # let Slurm say how it ended (TIMEOUT, FAILED...) before recording it
                return self._dead_row(followed, f"raised {_last_line(str(exc))}")
            if row["status"] == "error":  # a cancel or timeout may kill the cell's process before the job ends
                if followed.state in WAITING:  # (UNKNOWN included)
                    return None  # let Slurm say how the job ended before recording why the cell died
                if followed.state != "COMPLETED":
                    return self._dead_row(followed, f"before its cell finished (the cell: {row['error']})")
            set_columns(row, slurm_job_id=followed.record.job_id, slurm_log=str(job.paths.stdout))
            row["null_reasons"]["slurm_state"] = (f"the job returned its row; Slurm's final state: "
                                                  f"sacct -j {followed.record.job_id}")
            if followed.record.mode == "cuda":
                row["null_reasons"]["gpu_index"] = "the job's GPU was chosen by Slurm on its node"
            return row
        if followed.state in WAITING or followed.since is None:
            return None
        if time.monotonic() - followed.since < GRACE_S.get(followed.state, DEFAULT_GRACE_S):
            return None
        return self._dead_row(followed, "without a row")

    def _dead_row(self, followed: "_Followed", what: str) -> dict:
        from cadbench.harness.launchers.local import dead_cell_row

        log = str(followed.job.paths.stdout)
        error = f"Slurm job {followed.record.job_id} ended {followed.state} {what}; log: {log}"
        row = dead_cell_row(followed.cell, {}, error, why=f"the Slurm job ended {followed.state} before the cell "
                                                          f"finished")
        return set_columns(row, slurm_job_id=followed.record.job_id, slurm_state=followed.state, slurm_log=log)

    def summary_lines(self) -> list[str]:
        lines = []
        if self.submitted:
            arrays = sorted({job_id.split("_")[0] for job_id in self.submitted}, key=int)
            lines.append(f"submitted {len(self.submitted)} cells to Slurm as job{'s' if len(arrays) > 1 else ''} "
                         f"{', '.join(arrays)}")
        if self.in_flight:
            lines.append(f"{len(self.in_flight)} Slurm jobs still running or queued: "
                         f"{' '.join(self.in_flight)}")
            lines.append("rerun the same command (same --out) to collect their rows and resubmit what failed")
        return lines


class _Followed:
    """A submitted job this run waits for, and what it last knew of its state."""

    def __init__(self, record: JobRecord, cell: Cell, job) -> None:
        self.record, self.cell, self.job = record, cell, job
        self.state = "UNKNOWN"
        self.since: float | None = None  # when the state was first seen
        self.shown: str | None = None


def _job_order(job_id: str) -> tuple[int, int]:
    array, _, task = job_id.partition("_")
    return int(array) if array.isdigit() else 0, int(task) if task.isdigit() else -1


__all__ = ["SlurmLauncher"]
