"""The `cadbench` command line: the parser and error handling. Each command lives in `cadbench.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from cadbench.commands import MODULES
from cadbench.errors import CadbenchError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other cadbench error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CadbenchError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cadbench", description="Benchmark fine-tuning methods for Segment Anything.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in MODULES:
        importlib.import_module(f"cadbench.commands.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # the exact command, for records that keep it
        return args.handler(args)
    except CadbenchError as exc:
        print(f"cadbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cadbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
