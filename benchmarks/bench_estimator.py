"""Time the GPU-free estimator over the default grid: every method x vit_b, vit_l, vit_h x batch sizes 1, 2, 4, 8, fp32.

Run: python benchmarks/bench_estimator.py [--backbones vit_b,vit_l,vit_h] [--batch-sizes 1,2,4,8] [--precision fp32]
                                          [--alloc-conf SETTINGS]
Prints one line per cell: wall seconds, CPU seconds, and of those the CPU seconds spent on the caching-allocator
simulation (building the allocation trace, the unlimited run, the OOM-line search); the estimated peak (allocated)
and reserved memory in GiB, their ratio (fragmentation), the OOM line (allocator budget + CUDA context) in GiB and the
budgets the search tried. Then the grid totals, and whether reserved >= allocated and allocated <= OOM budget <=
reserved held in every cell. Cells run in one process, in grid order, so later cells reuse earlier work exactly as
`cadbench estimate` does. Not a unit test: timings depend on the machine (the targets were set for a 2-core CPU
machine: grid <= 60 s, a ViT-H cell <= 10 s, the allocator simulation <= 20% of the grid's time).
"""

from __future__ import annotations

import argparse
import time

from cadbench.estimator import AllocatorConfig, estimate_cell
from cadbench.estimator import cells as cells_module
from cadbench.estimator import estimate as estimate_module
from cadbench.harness.grid import expand_grid
from cadbench.registry import default_methods
from cadbench.vocabulary.method_spec import split_method_list

GIB = 2**30


class _CpuTimer:
    """Adds up the CPU time spent inside the wrapped functions."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function):
        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(default_methods()), help="method specs, as --methods takes them")
    parser.add_argument("--backbones", default="vit_b,vit_l,vit_h")
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--alloc-conf", default="", help="caching-allocator settings (default: PyTorch's defaults)")
    options = parser.parse_args()
    config = AllocatorConfig.parse(options.alloc_conf)
    grid = expand_grid(split_method_list(options.methods), options.backbones.split(","),
                       [int(size) for size in options.batch_sizes.split(",")], options.precision.split(","))
    simulation = _CpuTimer()  # the trace is built in cells (allocation_trace), simulated in estimate (simulate)
    cells_module.allocation_trace = simulation.wrap(cells_module.allocation_trace)
    estimate_module.simulate = simulation.wrap(estimate_module.simulate)
    print(f"{'cell':34s} {'wall s':>7s} {'cpu s':>7s} {'sim s':>6s} {'peak GiB':>9s} {'rsvd GiB':>9s} "
          f"{'ratio':>6s} {'OOM GiB':>8s} {'tries':>5s}")
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    broken = []
    for cell in grid:  # in `cadbench estimate`'s order
        wall, cpu, simulated = time.perf_counter(), time.process_time(), simulation.seconds
        result = estimate_cell(cell, alloc_conf=config)
        print(f"{cell.key:34s} {time.perf_counter() - wall:7.2f} {time.process_time() - cpu:7.2f} "
              f"{simulation.seconds - simulated:6.2f} {result.peak_bytes / GIB:9.2f} "
              f"{result.reserved_bytes / GIB:9.2f} "
              f"{result.fragmentation_ratio:6.3f} {result.oom_capacity_bytes() / GIB:8.2f} "
              f"{result.allocator.probes:5d}", flush=True)
        if not (result.reserved_bytes >= result.peak_bytes
                and result.peak_bytes <= result.allocator_budget_bytes <= result.reserved_bytes):
            broken.append(cell.key)
    cpu_total = time.process_time() - cpu_start
    print(f"{'grid total':34s} {time.perf_counter() - wall_start:7.2f} {cpu_total:7.2f} {simulation.seconds:6.2f}  "
          f"(simulation {simulation.seconds / (cpu_total - simulation.seconds):.1%} on top of the rest)")
    print("reserved >= allocated and allocated <= OOM budget <= reserved in every cell" if not broken
          else f"invariant broken in: {', '.join(broken)}")


if __name__ == "__main__":
    main()
