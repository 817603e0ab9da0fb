"""The `cadbench` command line: the parser and error handling. Each command lives in `cadbench.commands`.

Stopping: Ctrl-C (SIGINT) exits 130 and SIGTERM (what Slurm and container runtimes send) exits 143, both with one
line. Either stops the running cell's process group, records nothing half-done and removes the cell's temporary
folder (the exception unwinds through the sweep); every cell finished before is kept, and a rerun with the same
--out resumes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

from cadbench.commands import MODULES
from cadbench.errors import CadbenchError


_STOPPED = "nothing half-done was recorded (a run resumes with the same --out)"


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no `except Exception` records it as a
    failed cell."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other cadbench error, and a value such as `-5%` after a
    flag is taken as that flag's value (argparse would take it for an unknown flag and then say the value is
    missing); what the value means is checked where it is used."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d+(\.\d*)?%?$|^-\.\d+%?$")

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CadbenchError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cadbench", description="Benchmark fine-tuning methods for Segment Anything.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in MODULES:
        importlib.import_module(f"cadbench.commands.{name}").register(commands)
    return parser


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread (once: a second SIGTERM while stopping is
    ignored, so the clean-up finishes). The previous handler is restored on the way out."""

    def handler(signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        with _sigterm_raises():
            args = build_parser().parse_args(argv)
            args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for records that keep it
            return args.handler(args)
    except CadbenchError as exc:
        print(f"cadbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cadbench: interrupted (SIGINT); {_STOPPED}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"cadbench: terminated (SIGTERM); {_STOPPED}", file=sys.stderr)
        return 143
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
