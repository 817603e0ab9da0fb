"""Time `cadbench fit` cold: a fresh Python process, nothing cached, as a user runs it.

Run: python benchmarks/bench_fit.py [any `cadbench fit` arguments]. With none: the default fit, every registered
method x vit_b, vit_l, vit_h x the default cards (cadbench.cards), largest plain batch searched to 64. Add
`--target-batch 4` for the lever search too (every lever combination at batch 4), `--jobs 1` to search the
method x backbone pairs one after another in one process (default: one process per core).

Prints the wall time of the whole command (process start, imports and the search), then, from the command's --json
answer, how many lever combinations each method x backbone had, how many were replayed and how many were skipped by
the advisor's pruning rule, and the issue's target where the arguments are one of the questions in TARGETS (cold, 2
idle cores); not a unit test, since timings depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


# The questions an issue set a time for: arguments -> (target in seconds, issue).
TARGETS = {
    (): (45, "issue 25"),
    # the default table when issue 25 was filed, before the SAM 2.1 and LiteMedSAM families joined the default
    ("--backbone", "vit_b,vit_l,vit_h"): (45, "issue 25, the default of its day"),
    ("--methods", "sam_adapter", "--backbone", "vit_h", "--gpu-memory", "24GB", "--target-batch", "4"): (6, "issue 25"),
    ("--methods", "lora", "--backbone", "sam2.1_hiera_b+", "--gpu-memory", "24GB", "--target-batch", "4"):
        (15, "issue 24"),
}


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
    print(f"{'method':16s} {'backbone':16s} {'levers':>7s} {'replayed (per card)':>24s} {'pruned (per card)':>22s}")
    for (method, backbone), rows in groups.items():
        print(f"{method:16s} {backbone:16s} {rows[0]['candidates']:7d} "
              f"{'/'.join(str(row['replayed']) for row in rows):>24s} "
              f"{'/'.join(str(row['pruned']) for row in rows):>22s}")
    target = TARGETS.get(tuple(arguments))
    print(f"cold `cadbench fit {' '.join(arguments)}`: {seconds:.1f} s wall for {len(answers)} answers "
          f"({len(groups)} method x backbone searches"
          + (f"; target ({target[1]}), 2 idle cores: {target[0]} s)" if target else ")"))


if __name__ == "__main__":
    main()
