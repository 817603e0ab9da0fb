"""Step-time statistics, shared by the CUDA and CPU measurements, and a timing as a row's columns (`StepTiming`)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

from cadbench.vocabulary.outcomes import RowPart, ThroughputSource

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


@dataclass(frozen=True)
class StepTiming(RowPart):
    """A timing as a row's columns: images per second at the median step, the median and p90 step times, whether
    the timing is noisy and whether it was timed again."""

    times: StepTimes
    batch_size: int  # images per step
    source: ThroughputSource  # what timed the steps: CUDA events, or the CPU's clock
    retimed: bool = False  # timed once more because the first timing was noisy (time_cpu_cell)

    def columns(self) -> dict[str, float | bool | str]:
        return {"throughput_img_s": self.times.throughput(self.batch_size), "throughput_source": self.source,
                "step_time_median_s": self.times.median, "step_time_p90_s": self.times.p90,
                "step_time_noisy": self.times.noisy, "step_time_retimed": self.retimed}


def time_cpu_cell(step: Callable[[], object], warmup: int, steps: int, batch_size: int) -> StepTiming:
    """A cell's steps timed on the CPU. A noisy timing (something outside the step slowed some steps) is timed once
    more, already warm, and the steadier of the two is kept."""
    times = time_cpu_steps(step, warmup, steps)
    retimed = times.noisy
    if retimed:
        times = min(times, time_cpu_steps(step, 0, steps), key=lambda timing: timing.spread)
    return StepTiming(times, batch_size, "cpu", retimed)
