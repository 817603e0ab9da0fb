"""`cadbench ARGS` run in the test's own process (`cadbench.cli.main`), answered as `subprocess.run` would answer:
the exit code, stdout and stderr. Most tests of the command line want what the command says and writes, not a new
Python process (each one imports torch again, seconds apiece); the tests of the process itself (signals, the folder
lock, isolation, kill and resume) start `python -m cadbench`. `cells_measured_here` goes one step further, for
runs whose cells need no process of their own."""

from __future__ import annotations

import importlib
import io
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Iterator

import pytest


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cadbench_main(*args) -> CliResult:
    """Run `cadbench ARGS` here. The cell processes a run starts hand their stderr to it (a pipe), so everything
    the command says goes through sys.stdout and sys.stderr."""
    from cadbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        returncode = main([str(arg) for arg in args])
    return CliResult(returncode, out.getvalue(), err.getvalue())


@contextmanager
def cells_measured_here(except_methods: tuple[str, ...] = ()) -> Iterator[None]:
    """While inside, a local run measures its device cells in this process, through the entry point a cell process
    runs (`cadbench.harness.measure_cell.main`, with the same JSON spec and the same row file), instead of starting
    `python -m cadbench.harness.measure_cell` for each: a fresh process imports torch, segment-anything and the
    metrics again (about 7 s of CPU on a 2-core machine) and rebuilds every estimate from scratch. For the tests of
    what a run records; the tests of the cell process itself (a crash, isolation, signals, a stop, pinning to a GPU,
    a Slurm job) keep the process; `except_methods` keeps it for the cells of those methods alone (a test of how a
    crashing cell's process ends, beside cells that only have to be measured)."""
    import json

    from cadbench.harness.launchers import local

    cell_process = importlib.import_module("cadbench.harness.measure_cell")  # the module, not its function
    in_a_process = local.run_cell_process

    def run_cell_here(argv: list[str], env: dict[str, str], on_start=None) -> tuple[int, str]:
        assert argv[1:3] == ["-m", "cadbench.harness.measure_cell"], argv
        if json.loads(argv[3])["cell"]["method"] in except_methods:
            return in_a_process(argv, env, on_start)
        return cell_process.main(argv[3:]), ""

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "run_cell_process", run_cell_here)
        yield
