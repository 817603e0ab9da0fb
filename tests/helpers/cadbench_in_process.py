"""`cadbench ARGS` run in the test's own process (`cadbench.cli.main`), answered as `subprocess.run` would answer:
the exit code, stdout and stderr. Most tests of the command line want what the command says and writes, not a new
Python process (each one imports torch again, seconds apiece); the tests of the process itself (signals, the folder
lock, isolation, kill and resume) start `python -m cadbench`."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass


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
