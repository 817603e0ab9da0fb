"""Peak memory and step time of a training step on a CUDA device.

Protocol (each point is checked on CPU through the fake CUDA layer in tests/fakecuda/):
1. `warmup` steps, untimed, so optimizer states exist, kernels are chosen and cuBLAS workspaces are allocated;
2. synchronise the device, then `reset_peak_memory_stats`: the peaks below cover the timed steps only;
3. `steps` timed steps, each between its own pair of CUDA events on the current stream; NVML is sampled after each
   step's end event is recorded, outside the timed pair;
4. synchronise the device, sample NVML once more (the end value), then read the peaks and the event times.

`max_memory_allocated` is what the memory gate compares; `max_memory_reserved` depends on the caching allocator's
history; NVML's per-process figure includes the CUDA context. The batch is already on the device: this times the
training step, not data loading. The code never knows which method it measures: it runs `step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from cadbench.measure.nvml import NvmlReading, ProcessMemorySampler
from cadbench.measure.timing import StepTimes, StepTiming
from cadbench.vocabulary.outcomes import MemorySource, RowPart

NO_ALLOCATION = "the step allocated no GPU memory"  # why a fragmentation ratio (reserved over allocated) is null


@dataclass(frozen=True)
class CudaMeasurement(RowPart):
    """The timed steps' memory as a row's columns (`columns`); their times as another part (`timing`)."""

    SOURCE: ClassVar[MemorySource] = "cuda"
    peak_allocated_bytes: int  # torch.cuda.max_memory_allocated over the timed steps
    peak_reserved_bytes: int  # torch.cuda.max_memory_reserved over the timed steps
    nvml: NvmlReading  # NVML's per-process memory: end value and peak seen, or why not
    times: StepTimes  # seconds per timed step, from CUDA events

    @property
    def fragmentation_ratio(self) -> float | None:
        """Reserved over allocated: how much more than the live tensors the caching allocator held."""
        return self.peak_reserved_bytes / self.peak_allocated_bytes if self.peak_allocated_bytes else None

    def columns(self) -> dict[str, int | float | str | None]:
        return {"peak_memory_bytes": self.peak_allocated_bytes, "memory_source": self.SOURCE,
                "reserved_memory_bytes": self.peak_reserved_bytes, **self.nvml.columns(),
                "fragmentation_ratio": self.fragmentation_ratio}

    def null_reasons(self) -> dict[str, str]:
        reasons = self.nvml.null_reasons()
        if self.fragmentation_ratio is None:
            reasons["fragmentation_ratio"] = NO_ALLOCATION
        return reasons

    def timing(self, batch_size: int) -> StepTiming:
        # flagged, not timed again: CUDA events time the GPU's work, which other processes' CPU load hardly moves
        return StepTiming(self.times, batch_size, "cuda", retimed=False)


def device_index(device: torch.device) -> int:
    """The CUDA device's index as PyTorch numbers it (after CUDA_VISIBLE_DEVICES); 'cuda' means the current one."""
    if device.type != "cuda":
        raise ValueError(f"measure_cuda_steps needs a CUDA device, got {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


def device_uuid(index: int) -> str:
    """The UUID of PyTorch's device `index`: the one identity PyTorch and NVML share."""
    return str(torch.cuda.get_device_properties(index).uuid)


def measure_cuda_steps(step: Callable[[], object], warmup: int, steps: int, device: torch.device) -> CudaMeasurement:
    """Run `step` `warmup` times, then measure `steps` more runs of it (see the module docstring for the protocol)."""
    index = device_index(device)
    for _ in range(warmup):
        step()
    torch.cuda.synchronize(index)
    torch.cuda.reset_peak_memory_stats(index)
    stream = torch.cuda.current_stream(index)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    with ProcessMemorySampler(device_uuid(index)) as nvml:
        for start, end in events:
            start.record(stream)
            step()
            end.record(stream)
            nvml.sample()
        torch.cuda.synchronize(index)
        nvml.sample()
    return CudaMeasurement(
        peak_allocated_bytes=torch.cuda.max_memory_allocated(index),
        peak_reserved_bytes=torch.cuda.max_memory_reserved(index),
        nvml=nvml.reading(),
        times=StepTimes([start.elapsed_time(end) / 1000.0 for start, end in events]),
    )
