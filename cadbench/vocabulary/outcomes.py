"""How a cell ended and where its figures came from: the words of a result row, declared once for every layer.

    Status            how a cell ended (the row's `status`)
    MemorySource      where `peak_memory_bytes` came from (the row's `memory_source`)
    ThroughputSource  where the step times came from (the row's `throughput_source`)

Each is a `Literal`; the tuple of its words is derived from it, never retyped. Rows are plain dicts (they are read
back from JSON and CSV), so a word written or compared anywhere in cadbench is checked against these by
tests/test_vocabulary_outcomes.py.
"""

from __future__ import annotations

from typing import Literal, get_args

# ok: measured; oom: the step ran out of device memory (a result, not a failure); error: the cell failed (retried on
# resume); not_applicable: a lever of the cell cannot apply to its method (the row's `error` says why), decided
# before anything runs, so there is nothing to retry.
Status = Literal["ok", "oom", "error", "not_applicable"]
STATUSES: tuple[Status, ...] = get_args(Status)
RETRIED: Status = "error"  # the one status a resumed run measures again
FINISHED_STATUSES: tuple[Status, ...] = tuple(status for status in STATUSES if status != RETRIED)

# cuda: max_memory_allocated on a GPU; estimated: the fake-tensor replay (cadbench.estimator); cpu: a CPU step's own
# memory.
MemorySource = Literal["cuda", "estimated", "cpu"]
MEMORY_SOURCES: tuple[MemorySource, ...] = get_args(MemorySource)

# cuda: CUDA events around each step on the GPU; cpu: wall-clock time of each step on the CPU.
ThroughputSource = Literal["cuda", "cpu"]
THROUGHPUT_SOURCES: tuple[ThroughputSource, ...] = get_args(ThroughputSource)
