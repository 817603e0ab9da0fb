"""GPU-free peak-memory estimation by replaying the training step on fake tensors.

    estimate_setup(make_setup, steps=2) -> MemoryEstimate      any training setup (the code never knows the method)
    estimate_cell(cell) -> MemoryEstimate                      a grid cell (cadbench.harness.grid.Cell), reusing work
    largest_fitting_batch(cell, capacity_bytes, ...) -> int; fit_table(cells, capacities, ...)  does it fit a GPU?
"""

from cadbench.estimator.cells import clear_cache, estimate_cell
from cadbench.estimator.cuda_runtime import DEFAULT_CUDA_CONTEXT_BYTES
from cadbench.estimator.estimate import Breakdown, MemoryEstimate, estimate_setup
from cadbench.estimator.fit import DEFAULT_MAX_BATCH, FitRow, fit_table, largest_fitting_batch
from cadbench.estimator.tracker import MemoryTracker

__all__ = ["DEFAULT_CUDA_CONTEXT_BYTES", "DEFAULT_MAX_BATCH", "Breakdown", "FitRow", "MemoryEstimate",
           "MemoryTracker", "clear_cache", "estimate_cell", "estimate_setup", "fit_table", "largest_fitting_batch"]
