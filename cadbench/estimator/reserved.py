"""Reserved memory and the out-of-memory line: the caching-allocator simulation run over a step's allocation trace.

Two figures come out of the trace (see allocation_trace) and the simulated allocator (see caching_allocator):

* `reserved_bytes`: `torch.cuda.max_memory_reserved` after the warm-up, on a card with room to spare (no request
  ever fails, so no cache is ever released: reserved memory only grows, and its peak is its final value);
* `oom_budget_bytes`: the least memory the driver must be able to hand the allocator for the whole run (setup,
  warm-up, measured step) to finish without an out-of-memory error, after the allocator's release-and-retry path.
  A card needs this plus what lies outside the allocator (the CUDA context: `MemoryEstimate.oom_capacity_bytes`).

Finding the line: a budget at or above the peak reserved never fails. Below it, the run is the same until the first
segment request that does not fit; there the allocator frees its unused cached segments and retries, and the run
goes on differently, so success is not strictly monotone in the budget (a smaller card can succeed where a slightly
larger one fails, because it released its cache earlier). The search goes down from the peak reserved in doubling
steps until a budget fails, then halves the last step between the lowest success and that failure, down to the
search's resolution: 2 MiB (the allocator's own granularity: segments and pages are multiples of it) times the
power of two that makes it about 1/1024 of the peak reserved (16 MiB at 16 GiB, 128 MiB at 128 GiB). The line is
the lowest budget found to succeed, with the budget one step below it failing (tests check both, and that it lies
between the allocated and the reserved peak). Budgets between the line and the peak that the search
did not try are not guaranteed to succeed: an exhaustive scan in 2 MiB steps over six default-grid cells (1,986
budgets between their line and their peak) found 4 that fail, all in one cell (cad/vit_b/4), within 12 MiB (0.07%)
above its line.

Cost: one pass over the trace with no limit, which notes each request to the driver that set a new high (the only
places where a run with a budget can first differ) and keeps a snapshot of the allocator every 1/16 of the trace;
each budget tried then goes on from the last snapshot before its first difference, not from the start. A budget
between the largest total a simulated run was granted and the smallest it was refused runs exactly as that run did
(the budget only enters the simulation as `total > budget` before each request to the driver), so it gets that
run's outcome without a simulation (`_Probe`); the budgets tried, and so the line, are the same as without.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from itertools import islice
from typing import Callable

from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.estimator.allocation_trace import AllocationTrace
from cadbench.estimator.caching_allocator import ROUND_LARGE, CachingAllocator, OutOfMemory

SNAPSHOTS = 16  # allocator snapshots kept along the trace for the OOM search


@dataclass(frozen=True)
class AllocatorEstimate:
    """What the simulated caching allocator made of one trace."""

    reserved_bytes: int  # peak reserved in the measured window, with no memory limit
    allocated_bytes: int  # peak allocated in the window as the allocator counts it (whole blocks handed out)
    oom_budget_bytes: int  # least memory the allocator must get for the run to finish (see the module docstring)
    segments: int  # segments (or expandable pages) obtained from the driver with no memory limit
    probes: int  # budgets simulated to find the OOM line


def simulate(trace: AllocationTrace, config: AllocatorConfig) -> AllocatorEstimate:
    """Run the trace with no memory limit, then search the OOM line (see the module docstring)."""
    search = _OomSearch(trace, config)
    unlimited = search.unlimited
    return AllocatorEstimate(reserved_bytes=unlimited.peak_reserved_bytes,
                             allocated_bytes=unlimited.peak_allocated_bytes, oom_budget_bytes=search.line(),
                             segments=unlimited.segments_allocated, probes=search.probes)


class _OomSearch:
    def __init__(self, trace: AllocationTrace, config: AllocatorConfig) -> None:
        self.trace, self.config, self.probes = trace, config, 0
        self.record_events: list[int] = []  # trace index of each request to the driver that set a new high ...
        self.record_needs: list[int] = []  # ... and the total it asked for (increasing)
        self.snapshots: dict[int, CachingAllocator] = {}  # trace index -> allocator state before that event
        self.known_runs: list[tuple[int, float, bool]] = []  # [from, to) budgets that run as one simulated; outcome
        self.unlimited = self._run_unlimited()

    def _run_unlimited(self) -> CachingAllocator:
        allocator = CachingAllocator(self.config)

        def on_segment(need: int) -> None:
            if not self.record_needs or need > self.record_needs[-1]:
                self.record_events.append(allocator.events - 1)
                self.record_needs.append(need)

        allocator.on_segment = on_segment
        events, window = self.trace.events, self.trace.window_start
        interval = max(1, -(-len(events) // SNAPSHOTS))
        stops = sorted({*range(0, len(events), interval), window, len(events)})
        for start, stop in zip(stops, stops[1:]):
            if start == window:
                allocator.reset_peak()
            if start % interval == 0:
                self.snapshots[start] = allocator.copy()
            _run(allocator, events, start, stop)
        return allocator

    def completes(self, budget: int) -> bool:
        """Whether the whole trace runs within `budget` bytes from the driver."""
        first_difference = bisect_right(self.record_needs, budget)
        if first_difference == len(self.record_needs):
            return True  # every request to the driver fits: the run is the unlimited one
        for lowest, highest, completed in self.known_runs:
            if lowest <= budget < highest:
                return completed  # the run with this budget is one already simulated (see _Probe)
        event = self.record_events[first_difference]
        start = max(index for index in self.snapshots if index <= event)
        self.probes += 1
        # every request to the driver before the first difference was granted, none asking more than this
        probe = _Probe(budget, self.record_needs[first_difference - 1] if first_difference else 0)
        allocator = self.snapshots[start].copy(budget)
        allocator.on_segment = probe.on_segment
        try:
            _run(allocator, self.trace.events, start, len(self.trace.events))
            completed = True
        except OutOfMemory:
            completed = False
        self.known_runs.append((probe.granted, probe.refused, completed))
        return completed

    def line(self) -> int:
        """The OOM line of this trace (see search_line), above the most memory ever handed out at once."""
        highest = self.unlimited.reserved_bytes
        return search_line(self.completes, highest, _allocated_peak(self.trace, self.unlimited),
                           resolution(highest, self.config))


class _Probe:
    """What one budgeted run asked the driver. The budget only ever enters the simulation as the test `total the
    driver would hold > budget` before each request to it (CachingAllocator's `on_segment` sees every such total).
    So any budget from the largest total granted up to, not including, the smallest refused gives every test the
    same result: the same run, to the same end (completed, or out of memory at the same request)."""

    def __init__(self, budget: int, granted_before: int) -> None:
        self.budget, self.granted, self.refused = budget, granted_before, math.inf  # inf: none refused

    def on_segment(self, total: int) -> None:
        if total <= self.budget:
            self.granted = max(self.granted, total)
        else:
            self.refused = min(self.refused, total)


def search_line(completes: Callable[[int], bool], highest: int, lowest: int, step: int) -> int:
    """The lowest budget found to complete among `highest - k * step` (k = 0, 1, ...) down to `lowest`: k grows
    1, 3, 7, ... while budgets complete, then the last gap is halved. `highest` must complete. The budget one step
    below the result failed, or lies below `lowest` (where nothing can complete)."""
    last = (highest - lowest) // step  # the largest k whose budget is not below `lowest`
    success, failure, stride = 0, None, 1
    while failure is None and success < last:
        k = min(last, success + stride)
        if completes(highest - k * step):
            success, stride = k, stride * 2
        else:
            failure = k
    while failure is not None and failure - success > 1:
        k = (success + failure) // 2
        if completes(highest - k * step):
            success = k
        else:
            failure = k
    return highest - success * step


def resolution(reserved_bytes: int, config: AllocatorConfig) -> int:
    """The OOM search's step: the allocator's granularity times the power of two nearest below 1/1024 of reserved."""
    base = math.gcd(ROUND_LARGE, config.large_segment_size)
    return base << max(0, (reserved_bytes // (1024 * base)).bit_length() - 1)


def _run(allocator: CachingAllocator, events: tuple, start: int, stop: int) -> None:
    malloc, free = allocator.malloc, allocator.free
    for ident, nbytes, stream in islice(events, start, stop):
        if nbytes:
            malloc(ident, nbytes, stream)
        else:
            free(ident)


def _allocated_peak(trace: AllocationTrace, allocator: CachingAllocator) -> int:
    """The most memory ever handed out at once, as the allocator rounds requests: no budget below it can work."""
    live: dict[int, int] = {}
    total = peak = 0
    round_size = allocator.round_size
    for ident, nbytes, _ in trace.events:
        if nbytes:
            size = live[ident] = round_size(nbytes)
            total += size
            if total > peak:
                peak = total
        else:
            total -= live.pop(ident)
    return peak


