"""Time the GPU-free estimator over the default grid: every method x vit_b, vit_l, vit_h x batch sizes 1, 2, 4, 8, fp32.

Run: python benchmarks/bench_estimator.py [--backbones vit_b,vit_l,vit_h] [--batch-sizes 1,2,4,8] [--precision fp32]
Prints one line per cell (wall seconds, CPU seconds, estimated peak in GiB) and the grid total. Cells run in one
process, in grid order, so later cells reuse earlier work exactly as `cadbench estimate` does. Not a unit test:
timings depend on the machine (the targets were set for a 2-core CPU machine: grid <= 60 s, a ViT-H cell <= 10 s).
"""

from __future__ import annotations

import argparse
import time

from cadbench.estimator import estimate_cell
from cadbench.harness.grid import expand_grid
from cadbench.method_spec import split_method_list
from cadbench.registry import default_methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(default_methods()), help="method specs, as --methods takes them")
    parser.add_argument("--backbones", default="vit_b,vit_l,vit_h")
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--precision", default="fp32")
    options = parser.parse_args()
    cells = expand_grid(split_method_list(options.methods), options.backbones.split(","),
                        [int(size) for size in options.batch_sizes.split(",")], options.precision.split(","))
    print(f"{'cell':34s} {'wall s':>7s} {'cpu s':>7s} {'peak GiB':>9s}")
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for cell in cells:  # in `cadbench estimate`'s order
        wall, cpu = time.perf_counter(), time.process_time()
        estimate = estimate_cell(cell)
        print(f"{cell.key:34s} {time.perf_counter() - wall:7.2f} {time.process_time() - cpu:7.2f} "
              f"{estimate.peak_bytes / 2**30:9.2f}", flush=True)
    print(f"{'grid total':34s} {time.perf_counter() - wall_start:7.2f} {time.process_time() - cpu_start:7.2f}")


if __name__ == "__main__":
    main()
