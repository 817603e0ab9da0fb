"""Time the GPU-free estimator over the default grid: 3 methods x vit_b, vit_l, vit_h x batch sizes 1, 2, 4, 8, fp32.

Run: python benchmarks/bench_estimator.py [--backbones vit_b,vit_l,vit_h] [--batch-sizes 1,2,4,8] [--precision fp32]
Prints one line per cell (wall seconds, CPU seconds, estimated peak in GiB) and the grid total. Cells run in one
process, in grid order, so later cells reuse earlier work exactly as `cadbench estimate` does. Not a unit test:
timings depend on the machine (the targets were set for a 2-core CPU machine: grid <= 60 s, a ViT-H cell <= 10 s).
"""

from __future__ import annotations

import argparse
import time

from cadbench.estimator import estimate_cell

METHODS = ("decoder_only", "sam_adapter", "cad")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--backbones", default="vit_b,vit_l,vit_h")
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--precision", default="fp32")
    options = parser.parse_args()
    batch_sizes = [int(size) for size in options.batch_sizes.split(",")]
    print(f"{'cell':34s} {'wall s':>7s} {'cpu s':>7s} {'peak GiB':>9s}")
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for backbone in options.backbones.split(","):
        for method in options.methods.split(","):
            for batch_size in batch_sizes:
                wall, cpu = time.perf_counter(), time.process_time()
                estimate = estimate_cell(method, backbone, batch_size, options.precision)
                cell = f"{method}/{backbone}/B={batch_size}/{options.precision}"
                print(f"{cell:34s} {time.perf_counter() - wall:7.2f} {time.process_time() - cpu:7.2f} "
                      f"{estimate.peak_bytes / 2**30:9.2f}", flush=True)
    print(f"{'grid total':34s} {time.perf_counter() - wall_start:7.2f} {time.process_time() - cpu_start:7.2f}")


if __name__ == "__main__":
    main()
