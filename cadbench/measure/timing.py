"""Step-time statistics, shared by the CUDA and CPU measurements."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

# A timing whose p90 step is more than this many times its median step is noisy: some steps were slowed by something
# outside the step (other processes on a shared CPU, most often), so its images/s is not a trend between cells.
NOISY_SPREAD = 2.0


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

    @property
    def spread(self) -> float:
        """p90 over median step time: 1.0 for perfectly even steps."""
        return self.p90 / self.median if self.median > 0 else float("inf")

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

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
