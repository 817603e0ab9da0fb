"""`SlurmConfig`: what `--launcher slurm` submits with. Typed, frozen, validated when made; what only the cluster can
tell (is there Slurm, is the partition known) is checked by the launcher before anything is submitted."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

from cadbench.errors import CadbenchError

# sbatch options with a flag of their own here, or set by the launcher (its array, its log files)
_OWN_OPTIONS = {"partition": "--slurm-partition", "p": "--slurm-partition", "time": "--slurm-time",
                "t": "--slurm-time", "mem": "--slurm-mem", "account": "--slurm-account", "A": "--slurm-account",
                "qos": "--slurm-qos", "q": "--slurm-qos", "constraint": "--slurm-constraint",
                "C": "--slurm-constraint", "gpus-per-node": "--slurm-gpus-per-job",
                "gres": "--slurm-gpus-per-job"}
_LAUNCHER_OPTIONS = ("array", "output", "error", "open-mode", "job-name", "J", "o", "e", "a", "signal")
_TIME = re.compile(r"^(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                   r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$")
UNLIMITED = ("infinite", "unlimited")
ONE_YEAR_MINUTES = 365 * 24 * 60  # what an unlimited partition's jobs are given (submitit needs a number)


def slurm_time_minutes(text: str) -> int:
    """Minutes in one of Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; 'infinite'/'unlimited' as a
    year (a job needs a number of minutes; the partition's own limit still applies). Raises ValueError."""
    text = text.strip()
    if text.lower() in UNLIMITED:
        return ONE_YEAR_MINUTES
    match = _TIME.match(text)
    if not match:
        raise ValueError(text)
    if match["days"] is not None:
        seconds = (int(match["days"]) * 24 + int(match["dh"])) * 3600 + int(match["dm"] or 0) * 60 \
            + int(match["ds"] or 0)
    elif match["c"] is not None:
        seconds = int(match["a"]) * 3600 + int(match["b"]) * 60 + int(match["c"])
    else:
        seconds = int(match["a"]) * 60 + int(match["b"] or 0)
    return max(1, math.ceil(seconds / 60))


@dataclass(frozen=True)
class SlurmConfig:
    NAME: ClassVar[str] = "slurm"
    partition: str | None = None  # None: the cluster's default partition
    gpus_per_job: int = 1  # GPUs a job of a CUDA cell asks for (cells measured without CUDA ask for none)
    time: str | None = None  # Slurm time format; None: the partition's default time (or its limit)
    mem: str | None = None  # e.g. 32G; None: the partition's default
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    options: tuple[tuple[str, str | None], ...] = ()  # any other sbatch option; a None value is a bare flag
    parallelism: int | None = None  # array tasks running at once; None: as many as Slurm allows
    estimate_jobs: bool = False  # estimate cells as CPU jobs (default: in the submitting process)
    detach: bool = False  # return after submitting; a later run with the same --out collects
    poll_seconds: float = 30.0  # the longest wait between two sacct calls while waiting for jobs

    def __post_init__(self) -> None:
        if isinstance(self.gpus_per_job, bool) or not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            raise CadbenchError(f"--slurm-gpus-per-job must be 0 or more, got {self.gpus_per_job!r}")
        if self.parallelism is not None and self.parallelism < 1:
            raise CadbenchError(f"--slurm-parallelism must be positive, got {self.parallelism}")
        if self.time is not None:
            try:
                slurm_time_minutes(self.time)
            except ValueError:
                raise CadbenchError(f"--slurm-time {self.time!r} is not a Slurm time (minutes, H:M:S or "
                                    f"D-H:M:S, e.g. 90, 1:30:00, 2-00:00:00)") from None
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?", self.mem.strip(), re.IGNORECASE):
            raise CadbenchError(f"--slurm-mem {self.mem!r} is not a Slurm memory size (e.g. 32G, 64000M)")
        for flag, value in (("--slurm-partition", self.partition), ("--slurm-account", self.account),
                            ("--slurm-qos", self.qos), ("--slurm-constraint", self.constraint)):
            if value is not None and (not value.strip() or any(c.isspace() for c in value)):
                raise CadbenchError(f"{flag} {value!r} must be one word")
        object.__setattr__(self, "options", tuple((key, value) for key, value in self.options))
        for key, _ in self.options:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
                raise CadbenchError(f"--slurm-option {key!r}: not an sbatch option name (KEY=VALUE, e.g. "
                                    f"mail-type=END)")
            if key in _OWN_OPTIONS:
                raise CadbenchError(f"--slurm-option {key}: use {_OWN_OPTIONS[key]} for that")
            if key.replace("_", "-") in _LAUNCHER_OPTIONS:
                raise CadbenchError(f"--slurm-option {key}: cadbench sets it itself (its array job and log files)")

    @classmethod
    def from_flags(cls, *, options: Iterable[str] = (), gpus_per_job: int | None = None, **values: Any
                   ) -> "SlurmConfig":
        """From the command line: `options` as 'KEY=VALUE' (or a bare 'KEY' flag) texts; None means default."""
        parsed = []
        for text in options:
            key, separator, value = text.partition("=")
            parsed.append((key.strip().lstrip("-"), value if separator else None))
        given = {name: value for name, value in values.items() if value is not None}
        if gpus_per_job is not None:
            given["gpus_per_job"] = gpus_per_job
        return cls(options=tuple(parsed), **given)

    def sbatch_parameters(self, minutes: int, gpus: int) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters for jobs asking for `gpus` GPUs each."""
        parameters: dict[str, Any] = {"job_name": "cadbench", "time": minutes, "stderr_to_stdout": True}
        for name in ("partition", "mem", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                parameters[name] = getattr(self, name)
        if gpus:
            parameters["gpus_per_node"] = gpus
        if self.parallelism is not None:
            parameters["array_parallelism"] = self.parallelism
        if self.options:
            parameters["additional_parameters"] = {key: True if value is None else value
                                                   for key, value in self.options}
        return parameters


__all__ = ["SlurmConfig", "slurm_time_minutes"]
