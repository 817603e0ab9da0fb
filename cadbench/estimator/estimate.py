"""The GPU-free peak-memory estimate of one training setup: replay its step on fake tensors, read the peak.

Protocol (what a GPU run with `warmup=1` does before `reset_peak_memory_stats`): one warm-up step, so AdamW's
states and the gradients exist, then the peak over the measured steps, counted from everything live at their start.
The estimate adds what the replay cannot see but a GPU run counts in `max_memory_allocated`: the cuBLAS
workspaces (see cuda_runtime).

Reserved memory and the out-of-memory line come from simulating PyTorch's caching allocator over the run's
allocation trace (allocation_trace, caching_allocator, reserved), with the allocator settings given
(`PYTORCH_CUDA_ALLOC_CONF` syntax, alloc_conf). They are a simulation of the allocator's algorithm, not a
measurement: `cadbench validate` on a GPU is how they are checked.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

from cadbench.estimator import cuda_runtime
from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.estimator.allocation_trace import AllocationTrace, build_trace
from cadbench.estimator.replay import FORWARD, GRADIENT, OPTIMIZER_STATE, PARAMETER, Replay, StepRecord
from cadbench.estimator.reserved import AllocatorEstimate, simulate
from cadbench.training.setup import TrainingSetup
from cadbench.vocabulary.outcomes import MemorySource, RowPart

TIMELINE_POINTS = 500
TOP_MODULES = 10

NOTES = (
    "Replayed on fake CPU tensors (FakeTensorMode): fake CUDA tensors cannot run backward without a CUDA driver. "
    "CUDA behaviour is modelled where it differs: CUDA's autocast policy (bf16 and fp16), CUDA's fused-attention "
    "kernel, AdamW's step counters in host memory.",
    "Allocator: each storage is rounded up to 512-byte blocks as the CUDA caching allocator does; a large cached block "
    "handed out whole (when the unused rest would be 1 MiB or less) can make a GPU's figure up to 1 MiB per such "
    "block higher, depending on allocation history.",
    "Reserved memory and the out-of-memory line are a simulation of PyTorch's caching allocator (its documented "
    "algorithm: rounding, small and large pools, best fit, splitting, merging, release-and-retry, expandable "
    "segments) over the run's allocation trace (setup, a warm-up step and the measured step at this batch size, one "
    "stream), not a measurement: no GPU was compared. `cadbench validate` on a GPU checks them against "
    "max_memory_reserved. The OOM line is the least memory the simulated allocator needs to finish, plus a stated "
    "1 GiB CUDA context (cuda_runtime.DEFAULT_CUDA_CONTEXT_BYTES), found to within about 0.1% of reserved memory.",
    "Library workspaces: two cuBLAS workspaces (forward thread and autograd thread; 32 MiB each on Hopper by default, "
    "CUBLAS_WORKSPACE_CONFIG honoured) are included in the peak and in temporaries. Not modelled: cuDNN convolution "
    "workspaces and cuFFT work areas (transient, chosen per algorithm at run time), scratch buffers inside CUDA "
    "kernels (e.g. multi-block reductions), cuDNN BatchNorm reserve space, and the CUDA context (outside the "
    "allocator; see fit.DEFAULT_CUDA_CONTEXT_BYTES).",
    "bf16/fp16: BatchNorm statistics saved for backward are in the half type in the replay, float32 on CUDA (a few "
    "KiB). fp16: the loss scaler's own tensors (scale, growth tracker, found-inf flags, inverse scale) are counted; "
    "the replayed step is one that does not overflow (an overflowing step skips the optimizer step).",
    "Fused attention (scaled_dot_product_attention: SAM's lean and checkpointed encoder, SAM 2's Hiera and decoder) "
    "is modelled as the kernel CUDA picks on an Ampere-class card (cuda_sdpa). With a mask (SAM's relative "
    "positions) or in fp32, the memory-efficient kernel: the mask padded to a multiple of 16 keys where it is not, the "
    "output and, when gradients are needed, the log-sum-exp; in backward the gradients of q, k and v and, when the "
    "mask trains, of the mask; no scores or softmax. In bf16 and fp16 without a mask, flash attention: the output and "
    "its log-sum-exp; in backward the gradients of q, k and v, then float32 dq_accum and softmax_d (rows rounded up "
    "to 128) while the kernel runs. Not modelled: cuDNN's attention, which recent PyTorch prefers on Hopper and "
    "Blackwell cards in bf16 and fp16; older cards (V100, T4), which run the memory-efficient kernel in every dtype; "
    "the memory-efficient kernel's output accumulator for half-precision inputs in some configurations.",
)


@dataclass(frozen=True)
class Breakdown:
    """What was live at the peak, by role; the five parts sum to the peak exactly.

    parameters: nn.Parameter storages. gradients: the parameters' .grad. optimizer_states: tensors in the
    optimizer's state that live on the GPU (AdamW's exp_avg, exp_avg_sq). activations: tensors made by the forward
    pass that are kept for the backward pass (still alive when backward starts: saved by autograd, or the step's
    outputs such as the logits). temporaries: everything else: the input batch, forward intermediates freed before
    backward (e.g. attention scores under no_grad), gradients flowing through the graph, optimizer scratch, module
    buffers, and the modelled cuBLAS workspaces.
    """

    parameters: int
    gradients: int
    optimizer_states: int
    activations: int
    temporaries: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_states + self.activations + self.temporaries


@dataclass(frozen=True)
class MemoryEstimate(RowPart):
    """Estimated `torch.cuda.max_memory_allocated` of a training step, with what makes it up. As a row's part: the
    row fields, marked estimated, and the timeline as side data."""

    SOURCE: ClassVar[MemorySource] = "estimated"
    peak_bytes: int
    breakdown: Breakdown
    # (phase, live bytes) over the last measured step, downsampled to at most 500 points keeping every stretch's
    # lowest and highest. Phases: "forward" from the step's start (zero_grad's frees included), "backward",
    # "optimizer" from the optimizer step to the step's end.
    timeline: tuple[tuple[str, int], ...]
    flops_per_step: int
    replayed_peak_bytes: int  # the tracker's peak: op-level allocations only, without workspaces
    workspace_bytes: int
    # The modules whose forward made the activations alive at the peak, largest first: (name, bytes), top 10.
    top_activation_modules: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = field(default=NOTES)
    # The caching-allocator simulation (None where it was not run: allocator settings it does not model, which
    # `alloc_conf.not_simulated` names). reserved_bytes: estimated `max_memory_reserved`; allocator_budget_bytes:
    # the least memory the allocator must get for setup, warm-up and the measured step to finish without OOM.
    reserved_bytes: int | None = None
    allocator_budget_bytes: int | None = None
    alloc_conf: AllocatorConfig = field(default_factory=AllocatorConfig)
    allocator: AllocatorEstimate | None = None

    @property
    def fragmentation_ratio(self) -> float | None:
        """Reserved over allocated: how much more than the live tensors the allocator holds at its peak."""
        return None if self.reserved_bytes is None or not self.peak_bytes else self.reserved_bytes / self.peak_bytes

    def oom_capacity_bytes(self, cuda_context_bytes: int = cuda_runtime.DEFAULT_CUDA_CONTEXT_BYTES) -> int | None:
        """The smallest card on which the simulated step finishes without OOM: the allocator's least budget plus
        what lies outside the allocator (the CUDA context)."""
        return None if self.allocator_budget_bytes is None else self.allocator_budget_bytes + cuda_context_bytes

    def as_row_fields(self) -> dict[str, int | float | str | None]:
        return {
            "peak_memory_bytes": self.peak_bytes,
            "reserved_memory_bytes": self.reserved_bytes,
            "fragmentation_ratio": self.fragmentation_ratio,
            "oom_capacity_bytes": self.oom_capacity_bytes(),
            "alloc_conf": self.alloc_conf.label,
            "flops_per_step": self.flops_per_step,
            "breakdown_parameters_bytes": self.breakdown.parameters,
            "breakdown_gradients_bytes": self.breakdown.gradients,
            "breakdown_optimizer_states_bytes": self.breakdown.optimizer_states,
            "breakdown_activations_bytes": self.breakdown.activations,
            "breakdown_temporaries_bytes": self.breakdown.temporaries,
        }

    def columns(self) -> dict[str, int | float | str | None]:
        return {**self.as_row_fields(), "memory_source": self.SOURCE}

    def null_reasons(self) -> dict[str, str]:
        """Reserved memory, fragmentation and the OOM line are null when the allocator was not simulated."""
        if self.allocator is not None or self.alloc_conf.simulated:
            return {}
        return dict.fromkeys(("reserved_memory_bytes", "fragmentation_ratio", "oom_capacity_bytes"),
                             self.alloc_conf.why_not_simulated)

    def side_data(self) -> dict[str, Any]:
        return {"_timeline": [list(point) for point in self.timeline]}


def estimate_setup(make_setup: Callable[[], TrainingSetup], steps: int = 2, *, fake: bool = True,
                   cache_ops: bool = True, workspace_bytes: int | None = None,
                   label: str | None = None, alloc_conf: AllocatorConfig | None = None) -> MemoryEstimate:
    """Peak memory of `make_setup()`'s training step: 1 warm-up step, then the peak over `steps - 1` steps.

    `make_setup` is called inside the fake mode, so everything it builds is fake (nothing real is allocated).
    `fake=False` runs the same replay on real tensors (the estimator's own test); `cache_ops=False` replays every
    op through FakeTensorMode (the reference for the op cache). `workspace_bytes` defaults to the cuBLAS workspaces
    of the step on Hopper (cuda_runtime.step_workspace_bytes()). `alloc_conf`: the caching
    allocator's settings for reserved memory and the OOM line (default: PyTorch's environment variables).
    Raises CadbenchError naming the op and the method when the step cannot run on fake tensors.
    """
    if steps < 2:
        raise ValueError("steps must be at least 2: one warm-up step, then measured steps")
    replay = Replay(make_setup, fake=fake, label=label, cache_ops=cache_ops)
    replay.warm_up(1)
    record = replay.measure(steps - 1)
    requests = None if workspace_bytes is None else ((workspace_bytes,) if workspace_bytes else ())
    return summarize(record, workspace_bytes, allocation_trace(replay, record, requests), alloc_conf)


def allocation_trace(replay: Replay, record: StepRecord,
                     workspace_requests: tuple[int, ...] | None = None) -> AllocationTrace:
    """The requests a GPU run's caching allocator would see up to the end of the replay's measured step (see
    allocation_trace.build_trace); `workspace_requests` default to the step's cuBLAS workspaces (a training step's
    two, an inference step's one)."""
    if workspace_requests is None:
        workspace_requests = cuda_runtime.step_workspace_requests(trains=record.trains)
    with _collector_paused():
        return build_trace(replay.setup_events, replay.setup_batch, replay.batch_events, replay.optimizer_states,
                           record.step_trace, workspace_requests)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection while the trace is built and simulated: they make many small objects but no cycles,
    and each full collection would walk every object of the replays kept in this process."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def summarize(record: StepRecord, workspace_bytes: int | None = None, trace: AllocationTrace | None = None,
              alloc_conf: AllocatorConfig | None = None) -> MemoryEstimate:
    """Turn a measured step into the estimate: breakdown at the peak, workspaces added, timeline downsampled, and,
    given its allocation trace, the caching-allocator simulation under `alloc_conf` (default: the environment's)."""
    if workspace_bytes is None:
        workspace_bytes = cuda_runtime.step_workspace_bytes(trains=record.trains)
    config = AllocatorConfig.from_environment() if alloc_conf is None else alloc_conf
    allocator = None
    if trace is not None and config.simulated:
        with _collector_paused():
            allocator = simulate(trace, config)
    parts = {"parameters": 0, "gradients": 0, "optimizer_states": 0, "activations": 0, "temporaries": 0}
    by_module: dict[str, int] = {}
    for block in record.live_at_peak:
        role = _role(block, record)
        parts[role] += block.nbytes
        if role == "activations" and block.origin:
            by_module[block.origin] = by_module.get(block.origin, 0) + block.nbytes
    parts["temporaries"] += workspace_bytes
    breakdown = Breakdown(**parts)
    peak = record.peak_bytes + workspace_bytes
    assert breakdown.total == peak, (breakdown, peak)
    top = sorted(by_module.items(), key=lambda item: (-item[1], item[0]))[:TOP_MODULES]
    return MemoryEstimate(
        peak_bytes=peak,
        breakdown=breakdown,
        timeline=downsample([(phase, live + workspace_bytes) for _, phase, live in record.timeline]),
        flops_per_step=record.flops,
        replayed_peak_bytes=record.peak_bytes,
        workspace_bytes=workspace_bytes,
        top_activation_modules=tuple(top),
        reserved_bytes=None if allocator is None else allocator.reserved_bytes,
        allocator_budget_bytes=None if allocator is None else allocator.oom_budget_bytes,
        notes=NOTES + config.notes,
        alloc_conf=config,
        allocator=allocator,
    )


def _role(block, record: StepRecord) -> str:
    for tag, role in ((PARAMETER, "parameters"), (GRADIENT, "gradients"), (OPTIMIZER_STATE, "optimizer_states")):
        if tag in block.tags:
            return role
    if block.phase == FORWARD and block.born > record.window_start:
        # made by a forward pass: an activation if it was still alive when the next backward pass started
        index = bisect.bisect_right(record.backward_starts, block.born)
        if index < len(record.backward_starts) and (block.died is None or block.died > record.backward_starts[index]):
            return "activations"
    return "temporaries"


def downsample(points: list[tuple[str, int]], limit: int = TIMELINE_POINTS) -> tuple[tuple[str, int], ...]:
    """At most `limit` points, keeping the lowest and highest of each stretch (so the peak is always kept)."""
    if len(points) <= limit:
        return tuple(points)
    values = [live for _, live in points]
    buckets = limit // 2
    kept: list[tuple[str, int]] = []
    for index in range(buckets):
        stretch = range(index * len(points) // buckets, (index + 1) * len(points) // buckets)
        low, high = min(stretch, key=values.__getitem__), max(stretch, key=values.__getitem__)
        kept.extend(points[i] for i in sorted({low, high}))
    return tuple(kept)
