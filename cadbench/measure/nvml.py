"""NVML's view of this process's GPU memory: what `nvidia-smi` shows, CUDA context included.

The GPU is found by UUID, never by index: under `CUDA_VISIBLE_DEVICES=3`, PyTorch's device 0 is NVML's device 3
(NVML always counts every physical GPU), and an index lookup would search the wrong GPU. PyTorch gives the UUID as
bare hex (`58e5d5c4-…`, from `get_device_properties(i).uuid`); NVML gives it as `GPU-58e5d5c4-…` (str, or bytes in
old bindings): both are reduced to the bare lowercase form before they are compared.

`ProcessMemorySampler` is opened once around the timed steps and sampled at each step's end. The caching allocator
only takes memory from the driver while steps run (it gives none back unless `empty_cache` is called or a failed
allocation makes it free its cache and retry), so the largest sample is the process's peak; a polling thread would
also catch the rare retry-after-free case, at the price of competing with the training loop for the GIL. Every
failure is a null with its reason, never an exception: NVML is an extra figure, not the measurement.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cadbench.vocabulary.outcomes import RowPart

UUID_PREFIXES = ("GPU-", "MIG-")
NVML_COLUMNS = ("nvml_process_memory_bytes", "nvml_process_peak_bytes")  # NVML's figure after the steps; its peak


def bare_uuid(uuid: Any) -> str:
    """'GPU-58E5…', b'GPU-58e5…', '58e5…' or a torch `_CUuuid` -> '58e5…' (lowercase, no prefix)."""
    text = uuid.decode("ascii", "replace") if isinstance(uuid, bytes) else str(uuid)
    text = text.strip().strip("\0")
    for prefix in UUID_PREFIXES:
        if text.upper().startswith(prefix):
            text = text[len(prefix):]
    return text.lower()


@dataclass(frozen=True)
class NvmlReading(RowPart):
    """NVML's per-process memory over the timed steps, in bytes: the last sample (after the device was synchronised)
    and the largest sample seen, or `reason` saying why a figure is None."""

    end_bytes: int | None
    peak_bytes: int | None
    samples: int
    reason: str | None = None

    def columns(self) -> dict[str, int | None]:
        return dict(zip(NVML_COLUMNS, (self.end_bytes, self.peak_bytes)))

    def null_reasons(self) -> dict[str, str]:
        if self.reason is None:
            return {}
        return {column: self.reason for column, value in self.columns().items() if value is None}


class ProcessMemorySampler:
    """Samples the memory NVML attributes to process `pid` on the GPU whose UUID is `cuda_uuid`.

    Use as a context manager: entering starts NVML and finds the GPU, `sample()` reads once, leaving shuts NVML
    down; `reading()` gives the figures. Nothing here raises: a missing or refusing NVML becomes the reason.
    """

    def __init__(self, cuda_uuid: Any, pid: int | None = None) -> None:
        self.uuid = bare_uuid(cuda_uuid)
        self.pid = os.getpid() if pid is None else pid
        self.values: list[int | None] = []
        self.reason: str | None = None
        self._nvml: Any = None
        self._handle: Any = None

    def __enter__(self) -> "ProcessMemorySampler":
        try:
            import pynvml
        except ImportError:
            self.reason = "pynvml (the nvidia-ml-py package) is not installed"
            return self
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 — no driver, no permission, a library mismatch: all a null
            self.reason = f"NVML could not start: {_describe(exc)}"
            return self
        self._nvml = pynvml
        try:
            self._handle = find_device(pynvml, self.uuid)
        except Exception as exc:  # noqa: BLE001
            self.reason = f"NVML could not list its GPUs: {_describe(exc)}"
        if self._handle is None and self.reason is None:
            self.reason = (f"no GPU known to NVML has the UUID PyTorch reports (GPU-{self.uuid}); "
                           f"a MIG instance or a virtualised GPU may be hidden from NVML")
        return self

    def sample(self) -> None:
        """Read this process's memory once (no device synchronisation: this is a host-side query)."""
        if self._handle is None:
            return
        try:
            processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception as exc:  # noqa: BLE001
            self.reason = f"NVML refused the process list: {_describe(exc)}"
            self.values.append(None)
            return
        mine = [process for process in processes if process.pid == self.pid]
        if not mine:
            self.reason = (f"NVML lists no process {self.pid} on GPU-{self.uuid} (inside a container NVML sees host "
                           f"process ids, not the container's)")
            self.values.append(None)
        elif mine[0].usedGpuMemory is None:
            self.reason = ("NVML lists this process but not its memory (not available on this platform, e.g. "
                           "Windows WDDM or MIG)")
            self.values.append(None)
        else:
            self.values.append(int(mine[0].usedGpuMemory))

    def reading(self) -> NvmlReading:
        known = [value for value in self.values if value is not None]
        end = self.values[-1] if self.values else None
        reason = self.reason
        if reason is None and not self.values:
            reason = "NVML was never sampled (no timed step ran)"
        return NvmlReading(end_bytes=end, peak_bytes=max(known) if known else None, samples=len(self.values),
                           reason=None if end is not None and known else reason)

    def __exit__(self, *exc_info) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 — shutting NVML down cannot spoil a measurement already taken
                pass


def find_device(pynvml: Any, uuid: str) -> Any | None:
    """The NVML handle of the physical GPU whose UUID is `uuid` (bare form), or None. NVML counts every GPU of the
    machine, whatever CUDA_VISIBLE_DEVICES says."""
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        if bare_uuid(pynvml.nvmlDeviceGetUUID(handle)) == uuid:
            return handle
    return None


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
