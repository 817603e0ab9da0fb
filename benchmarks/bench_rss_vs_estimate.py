"""A real CPU training step's RSS growth against the estimator's peak for one cell, in this fresh process.

    python benchmarks/bench_rss_vs_estimate.py METHOD BACKBONE BATCH   (e.g. lora litemedsam 1)

After the imports, the baseline is the process's RSS and its high-water mark is reset (`/proc/self/clear_refs`, 5);
the cell's setup is built (weights, method, levers, batch) and two steps run (the first makes the optimizer's
states); growth = VmHWM - baseline. It is compared with the estimate's peak (the fake-tensor replay with the CUDA
models) and with the replay's own peak on CPU kernels. glibc keeps freed blocks in its heap and reuses them
unevenly, so RSS then exceeds the live bytes; run it with `MALLOC_MMAP_THRESHOLD_=65536` (large blocks mmapped
and returned when freed) to compare live bytes. Linux only. Not a unit test.
"""

from __future__ import annotations

import sys

import torch


def status(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field))


def main(method: str, backbone: str, batch: int) -> None:
    from cadbench.backbones import build_sam
    from cadbench.estimator import estimate_cell
    from cadbench.harness.grid import make_cell
    from cadbench.training.setup import make_training_setup

    torch.set_num_threads(1)
    cell = make_cell(method, backbone, batch)
    build_sam(backbone, device="meta")  # every import a build makes (timm for litemedsam), before the baseline
    torch.ones(8, 8) @ torch.ones(8, 8)
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := the RSS now
    setup = make_training_setup(cell)
    setup.step()
    setup.step()
    growth = status("VmHWM") - before
    estimate = estimate_cell(cell)
    mib = 2 ** 20
    print(f"{method} {backbone} batch {batch}: RSS growth {growth / mib:.1f} MiB; estimate peak "
          f"{estimate.peak_bytes / mib:.1f} MiB (replay on CPU kernels {estimate.replayed_peak_bytes / mib:.1f}); "
          f"growth/estimate {growth / estimate.peak_bytes:.3f}, growth/replayed "
          f"{growth / estimate.replayed_peak_bytes:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
