"""The configs of the launchers that run cells on this machine (Slurm's is `slurm/config.py`): typed, frozen,
validated when made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cadbench.errors import CadbenchError


@dataclass(frozen=True)
class LocalConfig:
    """Every device cell in a fresh process on this machine, one after another (what `cadbench run` always did);
    estimate cells in this process, or spread over `jobs` processes (launchers/estimates.py)."""

    NAME: ClassVar[str] = "local"
    jobs: int | None = None  # processes estimating at once; None: harness.processes.default_jobs() (one per core)

    def __post_init__(self) -> None:
        if self.jobs is not None and (isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1):
            raise CadbenchError(f"--jobs must be at least 1, got {self.jobs!r}")


@dataclass(frozen=True)
class GpusConfig:
    """Up to one cell per listed GPU at a time, each in its own process pinned to its GPU (CUDA_VISIBLE_DEVICES).
    Indices are PyTorch's in this process (so a CUDA_VISIBLE_DEVICES given to cadbench itself still applies)."""

    NAME: ClassVar[str] = "gpus"
    gpus: tuple[int, ...] | None = None  # None: every GPU PyTorch sees

    def __post_init__(self) -> None:
        if self.gpus is None:
            return
        gpus = tuple(self.gpus)
        object.__setattr__(self, "gpus", gpus)
        if not gpus:
            raise CadbenchError("--gpus needs at least one GPU index (or 'all')")
        for index in gpus:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise CadbenchError(f"--gpus takes GPU indices (0, 1, ...) or 'all', got {index!r}")
        if len(set(gpus)) != len(gpus):
            twice = sorted({index for index in gpus if gpus.count(index) > 1})
            raise CadbenchError(f"--gpus names GPU {twice[0]} twice")

    @classmethod
    def parse(cls, text: str) -> "GpusConfig":
        """'all' or '0,1,3'."""
        if text.strip().lower() == "all":
            return cls()
        items = [item.strip() for item in text.split(",")]
        if not all(item.isdigit() for item in items):
            bad = next(item for item in items if not item.isdigit())
            raise CadbenchError(f"--gpus takes 'all' or comma-separated GPU indices such as 0,1,3, got {bad!r}")
        return cls(tuple(int(item) for item in items))
