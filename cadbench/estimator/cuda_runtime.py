"""What the estimator assumes about the CUDA runtime it cannot see: allocator rounding, library workspaces, context.

Every figure here is a stated assumption with its source, not a measurement (this code runs without a GPU).
"""

from __future__ import annotations

import os
import re

# c10/cuda/CUDACachingAllocator.cpp, `round_size`: requests are rounded up to a multiple of kMinBlockSize (512 bytes);
# a zero-byte request allocates nothing. `max_memory_allocated` counts these rounded block sizes.
ALLOCATOR_BLOCK_BYTES = 512

# aten/src/ATen/cuda/CublasHandlePool.cpp (PyTorch 2.x), `parseChosenWorkspaceSize`: without CUBLAS_WORKSPACE_CONFIG
# the cuBLAS workspace is 4096 KiB x 8 = 32 MiB on compute capability 9.x (Hopper; 10.x/12.x in recent releases) and
# 4096 KiB x 2 + 16 KiB x 8 elsewhere. It is allocated through the caching allocator (so it shows in
# max_memory_allocated), once per (thread, stream) that runs a matmul, and kept. cuBLASLt shares it by default
# (TORCH_CUBLASLT_UNIFIED_WORKSPACE). A training step runs matmuls on two threads: the forward on the caller's thread,
# the backward on the autograd engine's device thread, hence two workspaces.
HOPPER_CUBLAS_WORKSPACE_BYTES = 4096 * 1024 * 8
OTHER_CUBLAS_WORKSPACE_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8
CUBLAS_WORKSPACES_PER_TRAINING_STEP = 2
CUBLAS_WORKSPACES_PER_INFERENCE_STEP = 1  # the forward alone, on the caller's thread

# Device memory a CUDA process uses outside PyTorch's allocator: the CUDA context and the cuBLAS/cuDNN kernels loaded
# (lazily) on first use. Not measurable here; 1 GiB is a deliberately generous allowance: public reports for PyTorch
# 2.x with CUDA 12 lazy module loading put it at roughly 0.5-1 GB per process on A100/H100. Measure yours with
# `cadbench run` on the GPU: a row's nvml_process_memory_bytes minus reserved_memory_bytes.
DEFAULT_CUDA_CONTEXT_BYTES = 1 << 30


def allocator_bytes(nbytes: int) -> int:
    """What the CUDA caching allocator counts for a request of `nbytes` (0 for 0)."""
    return -(-nbytes // ALLOCATOR_BLOCK_BYTES) * ALLOCATOR_BLOCK_BYTES


def cublas_workspace_bytes(config: str | None = None, hopper: bool = True) -> int:
    """One cuBLAS workspace as PyTorch sizes it: from CUBLAS_WORKSPACE_CONFIG (":SIZE_KiB:COUNT" pairs) if set."""
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG") if config is None else config
    pairs = re.findall(r":([0-9]+):([0-9]+)", config or "")
    if pairs:
        return sum(int(size) * 1024 * int(count) for size, count in pairs)
    return HOPPER_CUBLAS_WORKSPACE_BYTES if hopper else OTHER_CUBLAS_WORKSPACE_BYTES


def step_workspace_bytes(config: str | None = None, hopper: bool = True, trains: bool = True) -> int:
    """cuBLAS workspaces live during a step after warm-up: a training step's two, an inference step's one (see
    CUBLAS_WORKSPACES_PER_TRAINING_STEP)."""
    workspaces = len(step_workspace_requests(config, hopper, trains))
    return workspaces * allocator_bytes(cublas_workspace_bytes(config, hopper))


def step_workspace_requests(config: str | None = None, hopper: bool = True, trains: bool = True) -> tuple[int, ...]:
    """The same workspaces as the caching allocator receives them: one request each (forward, then backward)."""
    count = CUBLAS_WORKSPACES_PER_TRAINING_STEP if trains else CUBLAS_WORKSPACES_PER_INFERENCE_STEP
    return (cublas_workspace_bytes(config, hopper),) * count
