"""Start-up time of the CLI: `cadbench --help` (target: under 1 s) and `cadbench list`, each a fresh process.

    python benchmarks/bench_cli_startup.py [--rounds 5] [--list-rounds 2]

`--help` must not import torch, pandas or matplotlib (tests/test_cli.py checks that); `list` must import torch and
segment-anything (it counts parameters on the meta device) and, while the optional peft package is installed, peft
(it counts the peft method's too), so its floor is those imports: the table also times a bare `import torch`,
`import segment_anything` and `import peft` in fresh processes, for comparison. Wall seconds on this machine: on a
shared machine, compare rows of one run, not runs of different days. Not a unit test.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time


def wall_seconds(arguments: list[str], rounds: int) -> list[float]:
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(arguments, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of --help and of each bare import")
    parser.add_argument("--list-rounds", type=int, default=2, help="runs of `cadbench list`")
    args = parser.parse_args()
    python = [sys.executable]
    cases = [("cadbench --help", [*python, "-m", "cadbench", "--help"], args.rounds, 1.0),
             ("python -c 'import torch'", [*python, "-c", "import torch"], args.rounds, None),
             ("python -c 'import segment_anything'", [*python, "-c", "import segment_anything"], args.rounds, None)]
    if importlib.util.find_spec("peft") is not None:
        cases.append(("python -c 'import segment_anything, peft'",
                      [*python, "-c", "import segment_anything, peft"], args.rounds, None))
    cases.append(("cadbench list", [*python, "-m", "cadbench", "list"], args.list_rounds, None))
    print(f"{'command':<42} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7}  target")
    for name, command, rounds, target in cases:
        seconds = wall_seconds(command, rounds)
        median = statistics.median(seconds)
        verdict = "" if target is None else f"< {target:g} s: {'met' if median < target else 'MISSED'}"
        print(f"{name:<42} {rounds:>4} {median:>9.2f} {min(seconds):>7.2f} {max(seconds):>7.2f}  {verdict}")


if __name__ == "__main__":
    main()
