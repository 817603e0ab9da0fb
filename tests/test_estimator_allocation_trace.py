"""The allocation history given to the caching-allocator simulation: complete, and a GPU run's at the batch size."""

import pytest

from cadbench.estimator.allocation_trace import build_trace, signature
from cadbench.estimator.cells import cell_allocation_trace
from cadbench.estimator.cuda_runtime import allocator_bytes, cublas_workspace_bytes
from cadbench.estimator.estimate import allocation_trace, summarize
from cadbench.estimator.replay import Replay
from cadbench.methods import BUILTIN_METHODS
from cadbench.training.setup import make_training_setup
from cadbench.vocabulary.cell import Cell

METHODS = tuple(BUILTIN_METHODS)


def _fresh(method: str, batch_size: int) -> tuple[Replay, object]:
    replay = Replay(lambda: make_training_setup(Cell(method, "test_scale", batch_size)))
    replay.warm_up(1)
    return replay, replay.measure(1)


@pytest.mark.parametrize("method", METHODS)
def test_the_first_step_is_the_measured_one_with_no_previous_gradients_and_new_optimizer_states(method):
    """The warm-up step is rebuilt from the measured step (so a replay shared between batch sizes can give it at any
    batch size): request for request, it is the replay's own first step."""
    replay, record = _fresh(method, 2)
    trace = build_trace(replay.setup_events, replay.setup_batch, replay.batch_events, replay.optimizer_states,
                        record.step_trace)
    real = replay.first_step_requests
    assert signature(trace, trace.first_step_start, trace.window_start) == real
    assert len(real) > 1000
    # AdamW's states, made in the first optimizer step; an inference step (zero_shot) has no optimizer
    assert any(replay.optimizer_states) == BUILTIN_METHODS[method].trains


@pytest.mark.parametrize("method", METHODS)
def test_a_cell_sharing_the_warm_replay_gets_the_history_of_a_fresh_run_at_its_batch_size(method):
    """estimate_cell warms up once at batch size 1 and measures other batch sizes after swapping the batch; its trace
    is nonetheless the one a replay built and warmed up at that batch size gives."""
    for batch_size in (2, 1):  # after the warm-up at 1, then after a step at 2
        replay, record = _fresh(method, batch_size)
        fresh = allocation_trace(replay, record)
        shared = cell_allocation_trace(Cell(method, "test_scale", batch_size))
        assert signature(shared) == signature(fresh)
        assert (shared.window_start, shared.first_step_start) == (fresh.window_start, fresh.first_step_start)


def test_the_trace_holds_every_storage_the_estimate_counts():
    """Replaying the trace's requests, rounded to 512 B, peaks in the measured window at the estimate's figure (the
    tracker's peak plus the two cuBLAS workspaces, which the trace makes in the first step)."""
    replay, record = _fresh("cad", 2)
    trace = allocation_trace(replay, record)
    live, total, peak = {}, 0, 0
    for index, (ident, nbytes, _) in enumerate(trace.events):
        if index == trace.window_start:
            peak = total
        if nbytes:
            live[ident] = allocator_bytes(nbytes)
            total += live[ident]
        else:
            total -= live.pop(ident)
        if index >= trace.window_start:
            peak = max(peak, total)
    assert peak == summarize(record).peak_bytes
    workspace = cublas_workspace_bytes()
    assert [nbytes for _, nbytes, _ in trace.events].count(workspace) >= 2
    assert {stream for _, _, stream in trace.events} == {0}
