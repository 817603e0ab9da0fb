"""Cell processes that never outlive the run: each starts in a process group (session) of its own, and the whole
group is killed when the run stops (SIGINT, SIGTERM, any exception) or the cell ends; and on Linux the cell process
is killed by the kernel when the run's process dies, even by kill -9.

Its own group keeps the terminal's Ctrl-C (sent to the foreground group) from reaching the cell process directly:
the run decides, then stops the whole group, including anything the cell started (e.g. data-loader workers).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from typing import Callable

PARENT_PID_VARIABLE = "CADBENCH_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def run_cell_process(argv: list[str], env: dict[str, str],
                     on_start: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Run `argv` to its end and return (exit code, stderr). On any exception (KeyboardInterrupt and SIGTERM's
    included) the process group is killed and reaped before the exception goes on. `on_start` receives the
    process group's id, for a caller that runs cells in threads: only the main thread gets signals, so it must be
    able to stop (`kill_group`) the cells that other threads wait for."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**env, PARENT_PID_VARIABLE: str(os.getpid())}, start_new_session=True)
    if on_start is not None:
        on_start(process.pid)
    try:
        _, stderr = process.communicate()
    except BaseException:
        kill_group(process.pid)
        process.kill()
        process.wait()
        raise
    kill_group(process.pid)  # anything the cell left running would skew the next cell's timing
    return process.returncode, stderr


def kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def die_with_parent() -> None:
    """In a cell process: ask the kernel to kill this process when the run's process dies (Linux), and exit at once
    if it has died already. Elsewhere nothing happens."""
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if not sys.platform.startswith("linux") or not expected:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != expected:  # the run died before the request was made
        os._exit(1)


WORKER_MEMORY_BYTES = 1_500_000_000  # `fit --methods full --backbone vit_h` peaked at 0.89 GB RSS (measured, CPU)


def default_jobs() -> int:
    """One search process per CPU core this process may use, at most one per WORKER_MEMORY_BYTES of the memory
    available now (MemAvailable in /proc/meminfo; where there is none, the cores alone), and at most CADBENCH_JOBS
    when that is set (a machine shared with other work; the test suite sets 1, since it runs a worker per core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cap = os.environ.get("CADBENCH_JOBS", "").strip()
    if cap.isdigit() and int(cap) >= 1:
        cores = min(cores, int(cap))
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return cores
    return max(1, min(cores, kib * 1024 // WORKER_MEMORY_BYTES))
