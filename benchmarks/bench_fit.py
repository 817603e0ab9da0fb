"""Time `cadbench fit` cold: a fresh Python process, nothing cached, as a user runs it.

Run: python benchmarks/bench_fit.py [any `cadbench fit` arguments]. With none: the default fit, every registered
method x vit_b, vit_l, vit_h x the default cards (cadbench.cards), largest plain batch searched to 64. Add
`--target-batch 4` for the lever search too (every lever combination at batch 4), `--jobs 1` to search the
method x backbone pairs one after another in one process (default: one process per core).

Prints the wall time of the whole command (process start, imports and the search), then, from the command's --json
answer, how many lever combinations each method x backbone had, how many were replayed and how many were skipped by
the advisor's pruning rule. The targets (issue 25; cold, 2 idle cores): 6 s for `--methods sam_adapter --backbone vit_h
--gpu-memory 24GB --target-batch 4`, 45 s for the default table; not a unit test, since timings
depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def main() -> None:
    arguments = sys.argv[1:]
    command = [sys.executable, "-m", "cadbench", "fit", *arguments, "--json", "--no-progress"]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        sys.exit(f"cadbench fit failed ({finished.returncode}): {finished.stderr.strip()}")
    answers = json.loads(finished.stdout)
    groups: dict[tuple[str, str], list[dict]] = {}
    for answer in answers:
        groups.setdefault((answer["method"], answer["backbone"]), []).append(answer)
    print(f"{'method':16s} {'backbone':9s} {'levers':>7s} {'replayed (per card)':>24s} {'pruned (per card)':>22s}")
    for (method, backbone), rows in groups.items():
        print(f"{method:16s} {backbone:9s} {rows[0]['candidates']:7d} "
              f"{'/'.join(str(row['replayed']) for row in rows):>24s} "
              f"{'/'.join(str(row['pruned']) for row in rows):>22s}")
    print(f"cold `cadbench fit {' '.join(arguments)}`: {seconds:.1f} s wall for {len(answers)} answers "
          f"({len(groups)} method x backbone searches; targets, 2 idle cores: 6 s for sam_adapter on vit_h at 24GB "
          f"with --target-batch 4, 45 s for the default table)")


if __name__ == "__main__":
    main()
