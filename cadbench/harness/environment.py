"""What a result set was measured on: versions, commit, GPU and driver (`collect_environment`, the mapping run.json
and results.json keep), and what a row records of it (`EnvironmentColumns`).

torch is imported where the environment is collected, not with this module: the row schema
(`harness.results.rows.new_row`) reads environments in processes that never need torch (`cadbench check`).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from cadbench.version import __version__
from cadbench.vocabulary.outcomes import RowPart


@dataclass(frozen=True)
class EnvironmentColumns(RowPart):
    """The environment's columns of a row: what the row's numbers depend on beyond the cell."""

    gpu_name: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None  # the CUDA torch was built with
    torch_version: str | None = None
    segment_anything_version: str | None = None
    cadbench_version: str | None = None
    git_commit: str | None = None  # the cadbench checkout's commit, '-dirty' when it has changes

    @classmethod
    def of(cls, environment: Mapping[str, Any]) -> "EnvironmentColumns":
        """From an environment as `collect_environment` gives it (and run.json keeps it); missing keys are null."""
        return cls(**{column.name: environment.get(column.name) for column in fields(cls)})

    def columns(self) -> dict[str, str | None]:
        return {column.name: getattr(self, column.name) for column in fields(self)}

    def null_reasons(self) -> dict[str, str]:
        """Why the environment left a column null. Whether a GPU and its driver are null for a reason follows from
        how the cell ran (harness.nulls), not from here."""
        reasons = {"cuda_version": "torch built without CUDA", "segment_anything_version": "version unknown",
                   "git_commit": "not a git checkout"}
        return {column: reason for column, reason in reasons.items() if getattr(self, column) is None}


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
    import torch

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
    import torch

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
