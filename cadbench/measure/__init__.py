"""Measurements on real devices. They receive a step to run, never a method: the code here cannot know what it
measures.

    measure_cuda_steps(step, warmup, steps, device) -> CudaMeasurement   peaks, NVML and CUDA-event times (cuda)
    time_cpu_steps(step, warmup, steps) -> StepTimes                      wall-clock step times on the CPU (timing)
    time_cpu_cell(step, warmup, steps, batch_size) -> StepTiming          the same, timed again when noisy (timing)
    ProcessMemorySampler(cuda_uuid) -> NvmlReading                        NVML's view of this process, by UUID (nvml)
    describe_device(device) -> DeviceDescription                          the GPU's name and memory, or the CPU (device)

Each result that fills a row's columns is a `RowPart` (cadbench.vocabulary.outcomes): CudaMeasurement, StepTiming,
NvmlReading, DeviceDescription.
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {"measure_cuda_steps": "cuda", "CudaMeasurement": "cuda", "time_cpu_steps": "timing",
            "StepTimes": "timing", "time_cpu_cell": "timing", "StepTiming": "timing",
            "ProcessMemorySampler": "nvml", "NvmlReading": "nvml",
            "describe_device": "device", "DeviceDescription": "device"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
