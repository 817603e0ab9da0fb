"""NVML's view of this process's GPU memory: what `nvidia-smi` shows, CUDA context included."""

from __future__ import annotations

import os


def process_gpu_memory_bytes(device_index: int) -> int | None:
    """Memory NVML attributes to this process on the device, or None when NVML cannot say (e.g. inside some
    containers processes are not visible)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if process.pid == os.getpid() and process.usedGpuMemory is not None:
                return int(process.usedGpuMemory)
        return None
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()
