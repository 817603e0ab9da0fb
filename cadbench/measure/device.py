"""The device a cell's steps ran on, as a row's columns: its name and, for a GPU, its memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cadbench.vocabulary.outcomes import RowPart

NO_GPU = "measured only on a CUDA device; this cell ran without one"


@dataclass(frozen=True)
class DeviceDescription(RowPart):
    name: str  # PyTorch's name of the GPU, or "cpu" with the malloc tunables in effect (measure/cpu_allocator.py)
    total_memory_bytes: int | None = None  # the GPU's memory; None for the CPU

    def columns(self) -> dict[str, str | int | None]:
        return {"device": self.name, "device_total_memory_bytes": self.total_memory_bytes}

    def null_reasons(self) -> dict[str, str]:
        return {} if self.total_memory_bytes is not None else {"device_total_memory_bytes": NO_GPU}


def describe_device(device: torch.device) -> DeviceDescription:
    """The GPU's name and memory as PyTorch reports them (its first CUDA call: a lost device fails here), or the CPU
    with the malloc tunables its process runs with."""
    if device.type == "cuda":
        return DeviceDescription(torch.cuda.get_device_name(device),
                                 torch.cuda.get_device_properties(device).total_memory)
    if device.type == "cpu":
        from cadbench.measure.cpu_allocator import describe_cpu

        return DeviceDescription(describe_cpu())
    return DeviceDescription(device.type)
