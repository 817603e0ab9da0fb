"""Live device memory, storage by storage, as the CUDA caching allocator would count it.

`MemoryTracker` is a `TorchDispatchMode`: it sees the outputs of every op, counts each storage it has not seen yet
once (views and in-place results share a storage and add nothing), rounded up as the CUDA caching allocator rounds
requests, and subtracts it when the storage is freed. The peak of that running total is the estimate of
`torch.cuda.max_memory_allocated`.

Only sizes and lifetimes are used, never values, so the same tracker runs on real tensors and on `FakeTensorMode`
tensors (whose storages live on the meta device and hold no data) and must give the same numbers on both.

A storage is followed through a weak reference with a callback: PyTorch keeps one Python object per live storage
(`Tensor.untyped_storage()` returns the same object for as long as the storage lives), so the callback fires
exactly when the storage itself is freed, whichever tensor or autograd node held it last.

With `trace` set to a list, the tracker also appends every allocation and free to it, in order, as `(True, block)`
and `(False, block)`: the sequence of requests the caching allocator would see (the block keeps the size requested
before rounding), which `allocation_trace` turns into the allocator simulation's input. Recording changes no figure.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from cadbench.estimator.cuda_runtime import allocator_bytes

_PRIM_DEVICE = torch.ops.prim.device.default
# Outputs that the CUDA kernel of an op keeps in host memory, by position: the memory-efficient attention kernel's
# philox seed and offset (attention.cu makes them with `at::empty({}, at::dtype(at::kLong))`, on the CPU). Its meta
# function makes them on the meta device, but FakeTensorMode (PyTorch 2.14) gives them the inputs' device, so the
# tracker would count two 8-byte tensors (1 KiB, rounded) per attention call that no GPU run allocates. Flash
# attention's, without dropout, likewise (flash_api.cpp's `mha_fwd`).
_HOST_OUTPUTS = {torch.ops.aten._scaled_dot_product_efficient_attention.default: (2, 3),
                 torch.ops.aten._scaled_dot_product_flash_attention.default: (6, 7)}


@dataclass(eq=False, slots=True)
class Block:
    """One storage as the allocator would hold it: its rounded size, when and where it was made, when it died."""

    nbytes: int
    born: int  # event number of the allocation
    phase: str
    origin: str  # label given at allocation: a module name during forward, "" otherwise
    died: int | None = None
    excluded: bool = False  # handed to `MemoryTracker.exclude`: not device memory on a GPU run
    tags: set[str] = field(default_factory=set)
    requested: int = 0  # the storage's size in bytes before the allocator's rounding


class MemoryTracker(TorchDispatchMode):
    """Counts live storages (optionally only those on one device type) and records the running total.

    Use as a context manager around the code to measure; tensors that already exist when tracking starts are added
    with `register`. `reset_peak` starts a new measurement window from the current total, as
    `torch.cuda.reset_peak_memory_stats` does. `phase_of` (giving a label such as "forward") and `origin` (giving a
    label for each new storage, e.g. the module running) are called at every allocation; `timeline` holds
    (event number, phase, live bytes) after every change inside the current window. `outside` is called for every op:
    when it says True, the op is no part of what is measured (e.g. a module's import-time code) and runs as if no
    dispatch mode were active (no fake tensors, no `run_op`), neither counted nor shown to `op_observers`.
    """

    def __init__(self, device_type: str | None = None) -> None:
        super().__init__()
        self.device_type = device_type
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_event = 0
        self.events = 0
        self.phase_of: Callable[[], str] = lambda: "setup"
        self.origin: Callable[[], str] = lambda: ""
        self.outside: Callable[[], bool] = lambda: False
        self.op_observers: list[Callable] = []  # called as observer(func, args, kwargs, out) after every op
        self.run_op: Callable | None = None  # runs ops instead of func(*args, **kwargs), e.g. a FakeOpCache
        self.blocks: list[Block] = []  # every block born or registered in the current window, plus the live ones
        self.timeline: list[tuple[int, str, int]] = []
        self.trace: list[tuple[bool, Block]] | None = None  # every allocation and free, in order, when a list
        self._live: dict[int, tuple[Block, weakref.ref]] = {}  # id(storage) -> block

    # -- accounting -------------------------------------------------------------------------------------------
    def register(self, tensors: Iterable[torch.Tensor], tag: str | None = None) -> None:
        """Count tensors made before tracking started (parameters built elsewhere, a batch, optimizer state)."""
        for tensor in tensors:
            block = self._track(tensor)
            if block is not None and tag:
                block.tags.add(tag)

    def block_of(self, tensor: torch.Tensor) -> Block | None:
        """The live block holding `tensor`'s storage, if it is being counted."""
        entry = self._live.get(id(_storage(tensor)))
        return entry[0] if entry else None

    def exclude(self, tensor: torch.Tensor) -> None:
        """Stop counting `tensor`'s storage (e.g. state that a GPU run keeps in host memory)."""
        storage = _storage(tensor)
        entry = self._live.get(id(storage)) if storage is not None else None
        if entry is not None and not entry[0].excluded:
            entry[0].excluded = True
            self._change(-entry[0].nbytes, self.phase_of())

    def reset_peak(self) -> None:
        """Start a new window: the peak restarts from what is live now; history before it is forgotten."""
        self.peak_bytes = self.live_bytes
        self.peak_event = self.events
        self.blocks = [block for block, _ in self._live.values() if not block.excluded]
        self.timeline = [(self.events, self.phase_of(), self.live_bytes)]

    def live_blocks(self) -> list[Block]:
        """Blocks counted now."""
        return [block for block, _ in self._live.values() if not block.excluded]

    def live_blocks_at(self, event: int) -> list[Block]:
        """Blocks of the current window that were alive just after `event`."""
        return [b for b in self.blocks if not b.excluded and b.born <= event and (b.died is None or b.died > event)]

    # -- dispatch ---------------------------------------------------------------------------------------------
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """No `torch._disable_dynamo` wrapper around `__torch_dispatch__` (PyTorch 2.10+ adds one to every dispatch
        mode unless this says False): it keeps torch.compile from tracing into the mode, and nothing in a replay is
        compiled, but it adds four Python calls, about 1.2 µs, to every op: 2-3% of a replay's CPU (a vit_h step
        runs about 65,000 ops). What the mode does is unchanged."""
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _PRIM_DEVICE and self.run_op is not None:
            # A device query (two thirds of a fake replay's dispatches; the autograd engine asks for every gradient)
            # allocates nothing, so nothing is counted or observed; the op runner answers it as it would inside or
            # outside the measured code (a fake tensor's device either way).
            return self.run_op(func, args, kwargs)
        if self.outside():
            with _disable_current_modes():
                return func(*args, **kwargs)
        try:
            out = func(*args, **kwargs) if self.run_op is None else self.run_op(func, args, kwargs)
        except Exception as error:
            if not hasattr(error, "failed_op"):
                error.failed_op = func  # which op failed, for a one-line report upstream
            raise
        if func is _PRIM_DEVICE:
            return out
        for observer in self.op_observers:
            observer(func, args, kwargs, out)
        if isinstance(out, torch.Tensor):
            self._track(out)
        elif isinstance(out, (tuple, list)):
            host = _HOST_OUTPUTS.get(func, ())
            for index, item in enumerate(out):
                if isinstance(item, torch.Tensor) and index not in host:
                    self._track(item)
        return out

    def _track(self, tensor: torch.Tensor) -> Block | None:
        device_type = tensor.device.type
        if device_type == "meta" or (self.device_type is not None and device_type != self.device_type):
            return None  # a meta tensor holds no memory anywhere (e.g. a fused attention kernel's host-side seed)
        storage = _storage(tensor)
        if storage is None:
            return None
        key = id(storage)
        entry = self._live.get(key)
        if entry is not None:
            return entry[0]
        self.events += 1
        phase = self.phase_of()
        nbytes = storage.nbytes()
        block = Block(allocator_bytes(nbytes), self.events, phase, self.origin(), requested=nbytes)
        self._live[key] = (block, weakref.ref(storage, lambda _ref, key=key: self._free(key)))
        self.blocks.append(block)
        if self.trace is not None:
            self.trace.append((True, block))
        self._change(block.nbytes, phase)
        return block

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is None:
            return
        block = entry[0]
        self.events += 1
        block.died = self.events
        if self.trace is not None:
            self.trace.append((False, block))
        if not block.excluded:
            self._change(-block.nbytes, self.phase_of())

    def _change(self, delta: int, phase: str) -> None:
        if delta == 0:
            return
        self.live_bytes += delta
        self.timeline.append((self.events, phase, self.live_bytes))
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self.peak_event = self.events


def _storage(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """The tensor's storage object; None for layouts without one (sparse, nested)."""
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
