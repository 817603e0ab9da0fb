"""Measurements on real devices. They receive a step to run, never a method: the code here cannot know what it
measures.

    measure_cuda_steps(step, warmup, steps, device) -> CudaMeasurement   peaks and CUDA-event times (cuda)
    time_cpu_steps(step, warmup, steps) -> StepTimes                      wall-clock step times on the CPU (timing)
    process_gpu_memory_bytes(device_index)                                NVML's view of this process (nvml)
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {"measure_cuda_steps": "cuda", "CudaMeasurement": "cuda", "time_cpu_steps": "timing",
            "StepTimes": "timing", "process_gpu_memory_bytes": "nvml"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
