"""The memory tracker: allocator rounding, one count per storage, frees, pre-existing tensors; real == fake."""

import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from cadbench.estimator.cuda_runtime import allocator_bytes, cublas_workspace_bytes, step_workspace_bytes
from cadbench.estimator.tracker import MemoryTracker


@pytest.mark.parametrize("requested, counted", [(0, 0), (1, 512), (512, 512), (513, 1024), (4 * 1000, 4096)])
def test_allocator_rounding(requested, counted):
    assert allocator_bytes(requested) == counted


def test_cublas_workspace_figures():
    assert cublas_workspace_bytes("") == 32 * 2**20  # Hopper default
    assert cublas_workspace_bytes("", hopper=False) == 4096 * 1024 * 2 + 16 * 1024 * 8
    assert cublas_workspace_bytes(":4096:8") == 32 * 2**20
    assert cublas_workspace_bytes(":16:8") == 128 * 1024
    assert step_workspace_bytes("") == 2 * 32 * 2**20


def _sequence(tracker: MemoryTracker) -> list[int]:
    """Allocate, view, free; return the live total after each step."""
    seen = []
    a = torch.empty(1000)  # 4000 B -> 4096
    seen.append(tracker.live_bytes)
    view = a.view(10, 100).t()  # same storage: nothing new
    a.add_(1)  # in place: nothing new
    seen.append(tracker.live_bytes)
    b = a * 2  # a new storage
    seen.append(tracker.live_bytes)
    del a
    seen.append(tracker.live_bytes)  # the view keeps a's storage alive
    del view
    seen.append(tracker.live_bytes)
    c = torch.empty(0)  # zero bytes: nothing
    seen.append(tracker.live_bytes)
    del b, c
    seen.append(tracker.live_bytes)
    return seen


def test_counts_each_storage_once_and_subtracts_frees():
    with MemoryTracker() as tracker:
        seen = _sequence(tracker)
    assert seen == [4096, 4096, 8192, 8192, 4096, 4096, 0]
    assert tracker.peak_bytes == 8192


def test_fake_tensors_give_the_same_sequence():
    with MemoryTracker() as real:
        real_seen = _sequence(real)
    with FakeTensorMode(), MemoryTracker() as fake:
        fake_seen = _sequence(fake)
    assert fake_seen == real_seen and fake.peak_bytes == real.peak_bytes


@pytest.mark.parametrize("fake", [True, False])
def test_memory_efficient_attentions_host_side_seed_and_offset_are_not_counted(fake):
    """On CUDA the kernel keeps its philox seed and offset on the host; fake tensors put them on the inputs' device,
    which would add 1 KiB per attention call that the real replay (and a GPU) never has."""
    from cadbench.estimator.cuda_sdpa import cuda_sdpa_model

    tracker = MemoryTracker()
    tracker.trace = []
    with (FakeTensorMode(allow_fallback_kernels=False) if fake else contextlib.nullcontext()), \
            cuda_sdpa_model(), tracker:
        query = torch.randn(2, 8, 4, 8, requires_grad=True)  # 2048 bytes
        torch.nn.functional.scaled_dot_product_attention(query, query, query)
    # the query, the output and the log-sum-exp (2 x 8 x 32 float32); nothing else
    assert [block.requested for allocated, block in tracker.trace if allocated] == [2048] * 3


def test_registered_tensors_count_and_reset_peak_starts_from_live():
    parameter = torch.nn.Parameter(torch.empty(300))  # 1200 B -> 1536
    with MemoryTracker() as tracker:
        tracker.register([parameter, parameter.view(3, 100)], tag="parameter")
        assert tracker.live_bytes == 1536
        assert "parameter" in tracker.block_of(parameter).tags
        tmp = torch.empty(1000)
        del tmp
        assert tracker.peak_bytes == 1536 + 4096
        tracker.reset_peak()
        assert tracker.peak_bytes == 1536
        del parameter
    assert tracker.live_bytes == 0


def test_exclude_stops_counting():
    with MemoryTracker() as tracker:
        host = torch.zeros(())
        assert tracker.live_bytes == 512
        tracker.exclude(host)
        assert tracker.live_bytes == 0
        del host
    assert tracker.live_bytes == 0


def test_device_filter():
    with FakeTensorMode(), MemoryTracker(device_type="cuda") as tracker:
        kept = torch.empty(10, device="cuda")
        ignored = torch.empty(10, device="cpu")
        assert tracker.live_bytes == 512
        del kept, ignored


def _replayed_trace_and_estimate(method: str):
    from cadbench.estimator.estimate import allocation_trace, summarize
    from cadbench.estimator.replay import Replay
    from cadbench.training.setup import make_training_setup
    from cadbench.vocabulary.cell import Cell

    replay = Replay(lambda: make_training_setup(Cell(method, "test_scale", 2)))
    replay.warm_up(1)
    record = replay.measure(1)
    trace = allocation_trace(replay, record)
    return trace, summarize(record, trace=trace)


@pytest.mark.parametrize("method", ["sam_adapter", "cad"])
def test_dispatch_without_pytorchs_dynamo_wrapper_replays_the_same_trace(monkeypatch, method):
    """The tracker opts out of the torch._disable_dynamo wrapper PyTorch puts around a dispatch mode's
    __torch_dispatch__ (about 1.2 µs an op); with the wrapper, the allocation trace and estimate are the same."""
    assert "__wrapped__" not in vars(MemoryTracker.__dict__["__torch_dispatch__"])
    shortcut = _replayed_trace_and_estimate(method)
    wrapped = torch._disable_dynamo(MemoryTracker.__dict__["__torch_dispatch__"], recursive=True)
    monkeypatch.setattr(MemoryTracker, "__torch_dispatch__", wrapped)
    assert _replayed_trace_and_estimate(method) == shortcut
