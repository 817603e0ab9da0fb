"""GPU-free peak-memory estimation by replaying the training step on fake tensors.

    estimate_setup(make_setup, steps=2) -> MemoryEstimate      any training setup (the code never knows the method)
    estimate_cell(cell, alloc_conf=None) -> MemoryEstimate     a grid cell (cadbench.vocabulary.cell.Cell), reusing work
    largest_fitting_batch(cell, capacity_bytes, ...) -> int; fit_table(cells, capacities, ...)  does it fit a GPU?
    AllocatorConfig.parse(text)                                caching-allocator settings (PYTORCH_CUDA_ALLOC_CONF)
    cell_allocation_trace(cell) -> AllocationTrace; simulate(trace, config) -> AllocatorEstimate   the simulation alone

A `MemoryEstimate` holds the estimated `max_memory_allocated` (`peak_bytes`, with its breakdown), and, from a
simulation of PyTorch's CUDA caching allocator over the run's allocation trace, the estimated `max_memory_reserved`
(`reserved_bytes`, `fragmentation_ratio`) and the out-of-memory line: `oom_capacity_bytes(cuda_context_bytes)`, the
smallest card on which the step finishes (`allocator_budget_bytes` plus the CUDA context).
Names load on first use, so `cadbench.estimator.alloc_conf` can be imported without torch.
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_CUDA_CONTEXT_BYTES": "cuda_runtime", "DEFAULT_MAX_BATCH": "fit", "FitRow": "fit",
    "fit_table": "fit", "largest_fitting_batch": "fit", "Breakdown": "estimate", "MemoryEstimate": "estimate",
    "estimate_setup": "estimate", "MemoryTracker": "tracker", "clear_cache": "cells", "estimate_cell": "cells",
    "AllocatorConfig": "alloc_conf", "AllocatorEstimate": "reserved", "AllocationTrace": "allocation_trace",
    "CachingAllocator": "caching_allocator", "OutOfMemory": "caching_allocator", "simulate": "reserved",
    "cell_allocation_trace": "cells",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
