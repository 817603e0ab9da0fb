"""How much of `cadbench fit`'s time the advisor's own rule makes it spend: every largest batch B it reports is
replayed exactly at B and at B+1, so those replays are a floor no search order can go under.

Run: python benchmarks/bench_fit_floor.py [fit arguments] (default: the default fit's cards on vit_b, vit_l, vit_h,
the table issue 25 set 45 s for). The fit runs in this process, one method x backbone after another (`--jobs 1`), so
each replay's time is its own CPU's; every estimate (a replay plus its allocator simulation; a method x backbone's
first one also builds its setup and warms it up) is timed. Prints, per method x backbone, the batch sizes replayed
and the answers' B and B+1 among them, then the share of the estimates' time spent at those sizes and what that floor
is on this machine's cores. Not a unit test: timings depend on the machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections import defaultdict

from cadbench import cli
from cadbench.estimator import advisor, fit


def main() -> None:
    arguments = sys.argv[1:] or ["--backbone", "vit_b,vit_l,vit_h"]
    timed: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    estimate = fit.estimate_cell

    def timed_estimate(cell, *args, **kwargs):
        start = time.process_time()
        try:
            return estimate(cell, *args, **kwargs)
        finally:
            timed[cell.method, cell.backbone].append((cell.batch_size, time.process_time() - start))

    fit.estimate_cell = advisor.estimate_cell = timed_estimate
    start = time.perf_counter()
    answer = io.StringIO()
    with contextlib.redirect_stdout(answer):
        status = cli.main(["fit", *arguments, "--jobs", "1", "--json", "--no-progress"])
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"cadbench fit failed ({status})")
    rule: dict[tuple[str, str], set[int]] = defaultdict(set)
    for row in json.loads(answer.getvalue()):
        largest = row["largest_plain_batch"]
        rule[row["method"], row["backbone"]].update(size for size in (largest, largest + 1) if size >= 1)
    print(f"{'method':16s} {'backbone':16s} {'replayed':>9s} {'at B, B+1':>10s}  batch sizes replayed (* at B or B+1)")
    total = at_rule = 0.0
    count = count_rule = 0
    for (method, backbone), replays in timed.items():
        sizes = [size for size, seconds in replays if seconds > 0.01]  # cached answers take no time
        needed = rule[method, backbone]
        total += sum(seconds for _, seconds in replays)
        at_rule += sum(seconds for size, seconds in replays if size in needed)
        count += len(sizes)
        count_rule += sum(size in needed for size in sizes)
        print(f"{method:16s} {backbone:16s} {len(sizes):9d} {sum(size in needed for size in sizes):10d}  "
              + " ".join(f"{size}{'*' if size in needed else ''}" for size in sizes))
    cores = len(os.sched_getaffinity(0))
    print(f"`cadbench fit {' '.join(arguments)}`: {wall:.1f} s wall in one process ({total:.1f} CPU-s in "
          f"{count} replays); the rule's own replays at each answer's B and B+1: {count_rule} of them, "
          f"{at_rule:.1f} CPU-s ({at_rule / total:.0%}), at least {at_rule / cores:.1f} s on this machine's "
          f"{cores} cores however the search is ordered or spread")


if __name__ == "__main__":
    main()
