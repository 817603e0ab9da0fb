"""Step-time statistics, shared by the CUDA and CPU measurements."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class StepTimes:
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p90(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]

    def throughput(self, batch_size: int) -> float:
        """Images per second at the median step time."""
        return batch_size / self.median


def time_cpu_steps(step: Callable[[], object], warmup: int, steps: int) -> StepTimes:
    """Wall-clock time of each of `steps` calls of `step` after `warmup` untimed ones (CPU: calls are synchronous)."""
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return StepTimes(seconds)
