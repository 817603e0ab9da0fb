"""A real CPU training step's RSS growth against the estimator's, for one cell: the physical check that the replay's
live bytes are what a real step allocates.

Run: MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/bench_cpu_rss.py [--method lora] [--backbone vit_b]
                                                                    [--batch-size 1] [--image-size 512]
Builds the cell's setup (random weights), runs one warm-up step (optimizer states and gradients then exist, as
before the estimator's measured step), then samples this process's RSS (/proc/self/statm, every 0.5 ms) through a
second step: growth = peak RSS - RSS before that step. The estimate's counterpart is the replay's op-level peak
(no CUDA workspaces) minus the live bytes at the step's start (the first point of its timeline, workspaces off). Without a fixed MALLOC_MMAP_THRESHOLD_, glibc keeps
the memory the warm-up step freed and reuses it, so the second step's RSS grows by less than it allocates. Not a
unit test: full size on a CPU takes minutes.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from cadbench.estimator import estimate_cell
from cadbench.harness.grid import make_cell
from cadbench.training.setup import make_training_setup

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora")
    parser.add_argument("--backbone", default="vit_b")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=None)
    args = parser.parse_args()
    cell = make_cell(args.method, args.backbone, args.batch_size, image_size=args.image_size)
    setup = make_training_setup(cell)
    setup.step()
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0005)

    before = rss()
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    setup.step()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - started
    growth = max(peak[0], rss()) - before
    estimate = estimate_cell(cell)
    start = estimate.timeline[0][1] - estimate.workspace_bytes  # the timeline carries the CUDA workspaces
    estimated = estimate.replayed_peak_bytes - start
    print(f"{cell.key}: real CPU step {seconds:.1f} s, RSS growth {growth / 1e9:.3f} GB (measured); estimated growth "
          f"{estimated / 1e9:.3f} GB (replayed peak {estimate.replayed_peak_bytes / 1e9:.3f} GB - "
          f"{start / 1e9:.3f} GB live at the step's start); real / estimated "
          f"{growth / estimated:.3f}; MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}")


if __name__ == "__main__":
    main()
