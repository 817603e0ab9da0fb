"""Peak memory and step time of a training step on a CUDA device.

Protocol: warm-up steps first (so optimizer states exist and kernels are chosen), then
`reset_peak_memory_stats`, then K steps timed with CUDA events. `max_memory_allocated` is what the memory gate
compares; `max_memory_reserved` depends on the caching allocator's history; NVML's per-process figure includes the
CUDA context. The batch is already on the device: this times the training step, not data loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cadbench.measure.nvml import process_gpu_memory_bytes
from cadbench.measure.timing import StepTimes


@dataclass(frozen=True)
class CudaMeasurement:
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    nvml_process_bytes: int | None
    device_total_bytes: int
    times: StepTimes


def measure_cuda_steps(step: Callable[[], object], warmup: int, steps: int, device: torch.device) -> CudaMeasurement:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for start, end in events:
        start.record()
        step()
        end.record()
    torch.cuda.synchronize(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return CudaMeasurement(
        peak_allocated_bytes=torch.cuda.max_memory_allocated(device),
        peak_reserved_bytes=torch.cuda.max_memory_reserved(device),
        nvml_process_bytes=process_gpu_memory_bytes(index),
        device_total_bytes=torch.cuda.get_device_properties(index).total_memory,
        times=StepTimes([start.elapsed_time(end) / 1000.0 for start, end in events]),
    )
