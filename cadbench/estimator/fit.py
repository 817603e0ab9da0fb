"""Does it fit? The largest batch size whose simulated out-of-memory line fits a GPU's memory.

A batch size fits a capacity when `estimate.oom_capacity_bytes(cuda_context_bytes) <= capacity_bytes`: the least
memory the simulated caching allocator needs for setup, warm-up and the measured step to finish without OOM (its
release-and-retry included, fragmentation and rounding counted), plus the CUDA context outside the allocator. It is a
simulation of the allocator's algorithm on the estimator's trace (see reserved), not a measurement.
The search assumes the line does not decrease with the batch size (true of every cell the estimator has measured):
it doubles the batch size until it no longer fits, then bisects.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from cadbench.errors import CadbenchError
from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.estimator.cells import estimate_cell
from cadbench.estimator.cuda_runtime import DEFAULT_CUDA_CONTEXT_BYTES
from cadbench.harness.grid import Cell

DEFAULT_MAX_BATCH = 64


def largest_fitting_batch(cell: Cell, capacity_bytes: int, cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES,
                          max_batch: int = DEFAULT_MAX_BATCH, alloc_conf: AllocatorConfig | None = None) -> int:
    """The largest batch size <= max_batch at which `cell` (its own batch size ignored) fits `capacity_bytes`
    under the allocator settings `alloc_conf` (default: the environment's); 0 if not even batch size 1 fits."""
    if capacity_bytes <= 0 or cuda_context_bytes < 0 or max_batch < 1:
        raise CadbenchError(f"capacity must be positive, CUDA context not negative and max batch at least 1 "
                            f"(got {capacity_bytes}, {cuda_context_bytes}, {max_batch})")
    config = AllocatorConfig.from_environment() if alloc_conf is None else alloc_conf
    if not config.simulated:
        raise CadbenchError(f"cannot tell what fits with allocator setting {', '.join(config.not_simulated)}: the "
                            f"caching-allocator simulation does not model it")

    def fits(batch_size: int) -> bool:
        estimate = estimate_cell(replace(cell, batch_size=batch_size), alloc_conf=config)
        return estimate.oom_capacity_bytes(cuda_context_bytes) <= capacity_bytes

    if not fits(1):
        return 0
    low, high = 1, 2  # low fits; high is the next candidate
    while high <= max_batch and fits(high):
        low, high = high, high * 2
    high = min(high, max_batch + 1)  # the smallest size known not to fit, or one past the limit
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@dataclass(frozen=True)
class FitRow:
    cell: Cell  # its batch size is the one searched from
    capacity_bytes: int
    cuda_context_bytes: int
    largest_batch: int  # 0: not even batch size 1 fits

    def as_dict(self) -> dict:
        identity = {name: value for name, value in self.cell.as_dict().items() if name != "batch_size"}
        return {**identity, "capacity_bytes": self.capacity_bytes, "cuda_context_bytes": self.cuda_context_bytes,
                "largest_batch": self.largest_batch}


def fit_table(cells: Iterable[Cell], capacities_bytes: Iterable[int],
              cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
              alloc_conf: AllocatorConfig | None = None) -> list[FitRow]:
    """`largest_fitting_batch` for every cell x capacity (estimates are shared between them)."""
    capacities_bytes = list(capacities_bytes)
    return [FitRow(cell, capacity, cuda_context_bytes,
                   largest_fitting_batch(cell, capacity, cuda_context_bytes, max_batch, alloc_conf))
            for cell in cells for capacity in capacities_bytes]
