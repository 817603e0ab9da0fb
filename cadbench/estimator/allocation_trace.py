"""The sequence of requests a GPU run's caching allocator would see, built from what the replay recorded.

The allocator's state carries over from one step to the next, so reserved memory depends on the whole history:
building the model, the warm-up steps, then the measured step. The replay records every allocation and free in
order (`MemoryTracker.trace`), but `estimate_cell` shares one warmed-up replay between batch sizes (warm-up at
batch size 1, see cells.py), so its history is not a GPU run's. The trace is therefore assembled from recorded
pieces into the history of a run at the cell's batch size:

1. setup: what building the setup allocated and freed (parameters, buffers, construction temporaries), then the
   making of the batch of the cell's batch size (in place of the warm replay's own, which the setup made last);
2. the first step (a warm-up): the measured step's requests, except that no gradients exist yet to be freed by
   `zero_grad`, AdamW's states (recorded in the replay's own first step, in order) are made where its first
   optimizer step makes them, and the two cuBLAS workspaces appear at the first forward and backward requests;
3. the measured step as recorded, its frees of the previous step's gradients now freeing the gradients left by the
   step before (in `zero_grad`'s parameter order). `reset_peak_memory_stats` comes before it (`window_start`).

`steady_steps` repeats the measured step (each freeing the previous one's gradients) before the last one; a GPU run
warms up 3 steps by default, but on the default grid a second warm-up step changes reserved memory in no cell, so
the estimate uses one (the allocator is in its steady state after the first step). Every
request keeps its size before rounding; everything runs on one stream (0), as a single-stream training step does
(autograd runs each backward op on its forward op's stream). Zero-byte storages never reach the allocator, and
storages a GPU run keeps in host memory (AdamW's step counters) are left out.
A test checks step 2 against the first step of a fresh replay at the cell's batch size, request for request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from cadbench.estimator.tracker import Block

BACKWARD, OPTIMIZER = "backward", "optimizer"
DEFAULT_STREAM = 0


@dataclass(frozen=True)
class AllocationTrace:
    """Requests in order: `(ident, nbytes, stream)`, an allocation when nbytes > 0, the free of `ident` when 0."""

    events: tuple[tuple[int, int, int], ...]
    window_start: int  # index of the measured step's first event: peaks are counted from here
    first_step_start: int = 0  # index of the first step's first event (the setup's requests come before it)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def allocations(self) -> int:
        return sum(1 for _, nbytes, _ in self.events if nbytes)


@dataclass(frozen=True)
class StepTrace:
    """What the replay recorded of one measured step (see Replay.measure)."""

    events: Sequence[tuple[bool, Block]]  # the step's allocations and frees, in order
    window_start: int  # tracker event number at the step's start: blocks born at or before it are the previous step's
    survivors: Sequence[Block]  # blocks the step made that outlive it (gradients), in the order zero_grad frees them


class _Builder:
    def __init__(self) -> None:
        self.events: list[tuple[int, int, int]] = []
        self._idents: dict[tuple[int, int], int] = {}  # (id(block), copy of the step) -> ident of its request
        self._next_ident = 0

    def allocate(self, block: Block, copy: int) -> None:
        if block.excluded or not block.requested:
            return
        self._idents[(id(block), copy)] = self._next_ident
        self.request(block.requested)

    def free(self, block: Block, copy: int) -> None:
        ident = self._idents.pop((id(block), copy), None)
        if ident is not None:
            self.events.append((ident, 0, DEFAULT_STREAM))

    def request(self, nbytes: int) -> None:
        """An allocation; on its own, one that is never freed (a library workspace)."""
        self.events.append((self._next_ident, nbytes, DEFAULT_STREAM))
        self._next_ident += 1

    def replay(self, events: Iterable[tuple[bool, Block]], copy: int, skip: set[int] = frozenset()) -> None:
        for allocated, block in events:
            if id(block) not in skip:
                (self.allocate if allocated else self.free)(block, copy)


def build_trace(setup_events: Sequence[tuple[bool, Block]], setup_batch: Iterable[Block],
                batch_events: Sequence[tuple[bool, Block]] | None, optimizer_states: Sequence[Block],
                step: StepTrace, workspace_requests: Sequence[int] = (), steady_steps: int = 0) -> AllocationTrace:
    """The allocation history of a GPU run at the measured step's batch size (see the module docstring).

    `setup_events`: what the replay's construction recorded; `setup_batch`: its batch's blocks; `batch_events`: the
    last `replace_batch` (None if the batch was never replaced); `optimizer_states`: AdamW's states in the order
    the first step made them; `workspace_requests`: cuBLAS workspace sizes (the first made at the first forward
    request, the second at the first backward request).
    """
    builder = _Builder()
    # 1. setup, with the batch of the measured step
    if batch_events is None:
        builder.replay(setup_events, 0)
    else:  # the setup made its batch last (make_training_setup): the swap's batch takes the place of that stretch
        batch = {id(block) for block in setup_batch}
        made = next((index for index, (allocated, block) in enumerate(setup_events) if id(block) in batch),
                    len(setup_events))
        builder.replay(setup_events[:made], 0)
        swapped_out = {id(block) for allocated, block in batch_events if not allocated}
        swapped_out -= {id(block) for allocated, block in batch_events if allocated}
        builder.replay(batch_events, 0, skip=swapped_out)

    # 2. the first step: no previous gradients; AdamW's states and the workspaces where a first step makes them
    first_step_start = len(builder.events)
    previous = {id(block) for allocated, block in step.events if not allocated and block.born <= step.window_start}
    workspaces = list(workspace_requests)
    states_pending = True
    if workspaces:
        builder.request(workspaces.pop(0))
    for allocated, block in step.events:
        if id(block) in previous:
            continue
        if allocated:
            if states_pending and block.phase == OPTIMIZER:
                for state in optimizer_states:
                    builder.allocate(state, 0)
                states_pending = False
            if workspaces and block.phase == BACKWARD:
                builder.request(workspaces.pop(0))
        (builder.allocate if allocated else builder.free)(block, 1)
    if states_pending:
        for state in optimizer_states:
            builder.allocate(state, 0)
    for nbytes in workspaces:
        builder.request(nbytes)

    # 3. the measured step (after `steady_steps` repetitions), each freeing the gradients of the step before where
    # the recorded step freed its predecessor's
    window_start = len(builder.events)
    for copy in range(2, 3 + steady_steps):
        window_start = len(builder.events)
        freed_previous = False
        for allocated, block in step.events:
            if id(block) in previous:
                if not freed_previous:
                    for survivor in step.survivors:
                        builder.free(survivor, copy - 1)
                    freed_previous = True
                continue
            (builder.allocate if allocated else builder.free)(block, copy)
    return AllocationTrace(tuple(builder.events), window_start, first_step_start)


def signature(trace: AllocationTrace, start: int = 0, stop: int | None = None) -> list[tuple[bool, int]]:
    """`(allocated, size requested)` per event of a stretch of the trace: what two traces must share to be the same
    history for the allocator (idents differ)."""
    sizes: dict[int, int] = {}
    out = []
    for ident, nbytes, _ in trace.events[:stop]:
        if nbytes:
            sizes[ident] = nbytes
        out.append((bool(nbytes), nbytes or sizes[ident]))
    return out[start:]
