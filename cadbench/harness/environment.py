"""What a result set was measured on: versions, commit, GPU and driver."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

from cadbench.version import __version__


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the cadbench source tree, if it is a git checkout (None for an installed wheel)."""
    source = Path(__file__).resolve().parents[1]  # the cadbench package's folder
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return result.stdout.strip() + ("-dirty" if dirty else "")


def gpu_info() -> dict:
    """GPU model, memory and driver via NVML (pynvml, from nvidia-ml-py); nulls when there is no NVIDIA GPU."""
    info = {"gpu_name": None, "gpu_total_memory_bytes": None, "driver_version": None}
    if not torch.cuda.is_available():
        return info
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    info["gpu_name"] = properties.name
    info["gpu_total_memory_bytes"] = properties.total_memory
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            info["driver_version"] = driver.decode() if isinstance(driver, bytes) else driver
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing or unusable: the driver stays unknown, the run goes on
        pass
    return info


def collect_environment() -> dict:
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cadbench_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "torchvision_version": _version("torchvision"),
        "segment_anything_version": _version("segment-anything") or _version("segment_anything"),
        "cuda_version": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **gpu_info(),
    }
