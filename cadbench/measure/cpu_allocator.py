"""How a cell process that runs its steps on the CPU allocates memory: glibc's malloc told to keep a step's large
blocks in its heap, where the next step reuses them.

PyTorch's CPU tensors come from the C library's malloc. glibc serves a block above its mmap threshold (dynamic,
never above 32 MiB) with a fresh mapping and unmaps it when it is freed, and gives the free top of its heap back
to the kernel above a trim threshold (twice the mmap threshold). A LiteMedSAM step allocates and frees blocks of
megabytes to tens of megabytes (Meta's mask decoder repeats the image embedding once per prompt: 17 MB for 4
prompts, 147 MB for a test tile's 35 nuclei in scoring), so each step faults their pages in again and the kernel
zeroes them. Measured on this project's 2-core machine (CPU, LiteMedSAM, batch 1, 4 prompts, each setting in a
fresh process, 5 alternating pairs; `benchmarks/bench_cpu_allocator.py` prints the table): a zero_shot inference
step was 1.3 to 1.8 times faster with `TUNABLES` in 4 pairs (e.g. 2.31 -> 1.42 s, median of 5; 2.65 million page
faults and 8 s of kernel time over the 5 steps -> none), and as fast in one whose tuned steps were disturbed; a
cad training step stayed within the machine's noise (0.86x to 1.31x). PyTorch's CPU performance
guide recommends an allocator that keeps freed memory for the same reason (jemalloc, tcmalloc); glibc's own tunables
do it with nothing more to install. Setting one tunable alone is worse: it turns the dynamic threshold off, and at
its 128 KiB start every block is mapped (3.7 to 4.1 s).

The launcher sets it for the cell processes that run on the CPU (`cell_process_environment`), unless the user's
environment already has GLIBC_TUNABLES, and the row's `device` column says what was in effect (`describe_cpu`).
A process keeps the memory it has used until it ends (a cell process ends after its cell), which is what a peak
measures anyway. It is read by glibc when a process starts, so it cannot be set from inside one.
"""

from __future__ import annotations

import os
import platform
from typing import Mapping

VARIABLE = "GLIBC_TUNABLES"
# Blocks up to 1 GiB come from the heap, and the heap's free top is given back to the kernel only above 4 GiB.
TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296"


def cell_process_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What to add to the environment of a cell process that runs on the CPU: `TUNABLES` on glibc, unless
    `environ` (default: this process's) sets GLIBC_TUNABLES already (the user's choice is kept); nothing elsewhere."""
    environ = os.environ if environ is None else environ
    if VARIABLE in environ or platform.libc_ver()[0] != "glibc":
        return {}
    return {VARIABLE: TUNABLES}


def describe_cpu(environ: Mapping[str, str] | None = None) -> str:
    """The `device` column of a cell whose steps ran on the CPU: "cpu", and the malloc tunables it ran with."""
    environ = os.environ if environ is None else environ
    tunables = environ.get(VARIABLE)
    return f"cpu ({VARIABLE}={tunables})" if tunables else "cpu"


def short_cpu_description(device: str) -> str:
    """`describe_cpu`'s text without the tunables' long value, for a table: "cpu (GLIBC_TUNABLES)" or "cpu". Any
    other device name (a GPU's) is returned as it is."""
    return f"cpu ({VARIABLE})" if device.startswith(f"cpu ({VARIABLE}=") else device
