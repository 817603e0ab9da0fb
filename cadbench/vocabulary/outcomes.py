"""How a cell ended and where its figures came from: the words of a result row, declared once for every layer.

    Status            how a cell ended (the row's `status`)
    MemorySource      where `peak_memory_bytes` came from (the row's `memory_source`)
    ThroughputSource  where the step times came from (the row's `throughput_source`)
    StepKind          what the measured step is (the row's `step_kind`): training, or inference
    RowPart           what one producer of a row's columns measured: its columns and why any of them is null

Each is a `Literal`; the tuple of its words is derived from it, never retyped. Rows are plain dicts (they are read
back from JSON and CSV), so a word written or compared anywhere in cadbench is checked against these by
tests/test_vocabulary_outcomes.py.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

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

# training: forward, backward and optimizer step; inference: the forward under no_grad, the step of a method that
# does not train (zero_shot), whose memory and throughput are inference's.
StepKind = Literal["training", "inference"]
STEP_KINDS: tuple[StepKind, ...] = get_args(StepKind)
TRAINING, INFERENCE = STEP_KINDS


class RowPart:
    """What one producer of a result row's columns measured: the CUDA measurement, the estimate, the step timing,
    the quality, the environment... Each is a frozen dataclass that says which columns it fills and, for any it
    leaves null, why; the cell's row merges them (cadbench.harness.measure_cell), so no one else needs to know a
    producer's columns by name."""

    def columns(self) -> dict[str, Any]:
        """The row's columns this part fills, by name (None where it could not measure one)."""
        raise NotImplementedError

    def null_reasons(self) -> dict[str, str]:
        """Why each column that `columns()` leaves null is null. They take precedence over the reasons that follow
        from how the cell was measured (cadbench.harness.nulls)."""
        return {}

    def side_data(self) -> dict[str, Any]:
        """Data for the report that travels beside the row, under keys starting with '_' (kept in side files)."""
        return {}
