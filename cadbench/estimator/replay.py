"""Run a training setup's real step under the memory tracker, on fake tensors (the estimate) or real ones (its test).

`Replay` builds the setup with `make_setup()` and steps it with `setup.step()`, the same code a GPU run times; it
never looks at which method it runs. Around every call it activates, in this order (innermost first):

* `FakeTensorMode` (fake replays only; fallback kernels off, so an op without a fake implementation fails instead of
  silently running for real on zero-filled tensors), with `FakeOpCache` answering repeated ops for it;
* `cuda_autocast_policy()`, so bf16 and fp16 cast as on CUDA (fake CUDA tensors cannot run backward without a
  driver, so the replay models the GPU with CPU tensors), and `cuda_sdpa_model()`, so fused attention allocates as
  the CUDA kernel it would run (memory-efficient or flash attention);
* the `MemoryTracker`, phase and module labels, and the garbage collector paused (no collection can free memory at a
  different moment in the fake and in the real replay).

Modes are only active inside `Replay` calls: between calls the caller's code runs normally.

The tracker records every allocation and free (`MemoryTracker.trace`); the replay keeps them by piece: building the
setup (`setup_events`, with the batch's blocks in `setup_batch`), the last `replace_batch` (`batch_events`), AdamW's
states as its first step made them (`optimizer_states`), and each measured step (`StepRecord.step_trace`), from
which `allocation_trace.build_trace` assembles the history the caching allocator of a GPU run would see.

GPU-run details modelled here, not in the tracker: AdamW (like every torch.optim optimizer without `capturable` or
`fused`) keeps its `step` counters in host memory on a GPU run, so they are excluded from the count.

A module imported for the first time inside a replay call (peft, when the peft method's options are first parsed
while its setup is built) runs its top-level code as it would outside the replay: on real tensors, uncounted, its ops
not counted as FLOPs. That code is no part of the step (a GPU run makes such tensors once per process, on the CPU, the
default device), and the replay must not depend on what the process imported before it: peft's module-level
`scale=torch.tensor(1)` defaults (`tuners/loha/layer.py`) were counted, 1 KiB in all, by whichever replay imported peft,
and were left behind in peft as fake tensors.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
from torch._subclasses import fake_tensor

from cadbench.errors import CadbenchError
from cadbench.estimator.allocation_trace import StepTrace
from cadbench.estimator.cuda_autocast import cuda_autocast_policy
from cadbench.estimator.cuda_sdpa import cuda_sdpa_model
from cadbench.estimator.fake_cache import FakeOpCache
from cadbench.estimator.flops import FlopCounter
from cadbench.estimator.tracker import Block, MemoryTracker
from cadbench.training.setup import TrainingSetup

FORWARD, BACKWARD, OPTIMIZER = "forward", "backward", "optimizer"
PARAMETER, GRADIENT, OPTIMIZER_STATE = "parameter", "gradient", "optimizer_state"

_SHARED_FAKE_CACHE: dict = {}  # FakeOpCache entries, shared by every replay of this process (metadata only)


def clear_shared_cache() -> None:
    _SHARED_FAKE_CACHE.clear()


@dataclass
class StepRecord:
    """What one measured step left behind: the peak, what was live at it, the running total, FLOPs."""

    peak_bytes: int
    window_start: int  # tracker event at which the measurement started
    backward_starts: list[int]  # tracker events at which a backward pass started
    live_at_peak: list[Block]
    timeline: list[tuple[int, str, int]]
    flops: int
    # True when the gradients left by the step before the measurement cannot have changed the peak: they were all
    # freed before anything was allocated, and the peak came later and exceeds the start of the window whichever
    # gradients a step at this batch size leaves. Matters when the step before ran another batch size: its
    # gradients can be laid out differently (with one image, AccumulateGrad keeps views of a shared storage).
    previous_gradients_irrelevant: bool
    step_trace: StepTrace  # the step's allocations and frees, for the caching-allocator simulation
    trains: bool = True  # a training step (forward, backward, optimizer); False: an inference step


class Replay:
    """A training setup built and stepped under a `MemoryTracker`; `fake=True` replays on fake tensors.

    `cache_ops=False` sends every op to FakeTensorMode (slow: the reference the FakeOpCache is tested against).
    """

    def __init__(self, make_setup: Callable[[], TrainingSetup], fake: bool = True, label: str | None = None,
                 cache_ops: bool = True) -> None:
        self.fake = fake
        self.label = label or getattr(make_setup, "__name__", "training setup")
        self.tracker = MemoryTracker()
        self.tracker.trace = []
        self.batch_events: list[tuple[bool, Block]] | None = None  # the last replace_batch's allocations and frees
        self.optimizer_states: list[Block] = []  # AdamW's states, in the order its first step made them
        # The first warm-up step's requests as (allocated, bytes requested; for a free, the freed block's): the check
        # that allocation_trace rebuilds a first step right (sizes only, so no block outlives its use).
        self.first_step_requests: list[tuple[bool, int]] = []
        self._fake_mode = fake_tensor.FakeTensorMode(allow_fallback_kernels=False) if fake else None
        if fake and cache_ops:
            # FakeOpCache answers every repeated op; FakeTensorMode's own cache would only add work to the rest.
            self._fake_mode.cache_enabled = False
            self.tracker.run_op = FakeOpCache(self._fake_mode, _SHARED_FAKE_CACHE)
        self._after_optimizer_started = False  # from the optimizer step to the end of the training step
        self._module_stack: list[str] = []
        self._module_names: dict[int, str] = {}
        with self.active():
            try:
                self.setup = make_setup()
            except CadbenchError:
                raise
            except Exception as error:
                if not fake or hasattr(error, "failed_op") or isinstance(error, _FAKE_ERRORS):
                    raise
                detail = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
                raise CadbenchError(f"cannot estimate memory for {self.label}: building its setup under fake "
                                    f"tensors failed ({type(error).__name__}: {detail})") from None
        self.label = label or _method_name(self.setup)
        with self.active():  # a setup made before (outside) the replay: count what it already holds
            self.tracker.register(self._setup_tensors())
        self.setup_events = self._take_trace()
        self.setup_batch = [block for block in map(self.tracker.block_of, self._batch_tensors()) if block]
        devices = {p.device.type for p in self.setup.module.parameters()}
        if fake and devices != {"cpu"}:
            raise CadbenchError(f"cannot estimate memory for {self.label}: its setup was built on "
                                f"{', '.join(sorted(devices))}; build it on the CPU (the replay models the GPU with "
                                f"fake CPU tensors: fake CUDA tensors cannot run backward without a CUDA driver)")
        self._module_names = {id(module): name or "(root)" for name, module in self.setup.module.named_modules()}
        if self.setup.optimizer is not None:  # an inference step (a method that does not train) has none
            self.setup.optimizer.register_step_pre_hook(lambda *_: self._set_optimizer_phase(True))

    # -- running ----------------------------------------------------------------------------------------------
    def warm_up(self, steps: int = 1) -> None:
        """Steps whose peak is not measured (after the first, optimizer states and gradients exist)."""
        for _ in range(steps):
            with self.active():
                self._step()
                self._tag_persistent_state()
            events = self._take_trace()
            if not self.first_step_requests:
                self.first_step_requests = [(allocated, block.requested) for allocated, block in events
                                            if not block.excluded and block.requested]
                self.optimizer_states = [block for allocated, block in events
                                         if allocated and OPTIMIZER_STATE in block.tags and not block.excluded]

    def measure(self, steps: int = 1) -> StepRecord:
        """Peak over `steps` steps counted from the live total before them (as after reset_peak_memory_stats).

        The timeline and FLOPs are those of the last step.
        """
        with self.active():
            self._tag_persistent_state()
            previous_gradients = [block for block in self.tracker.live_blocks() if GRADIENT in block.tags]
            self._take_trace()
            self.tracker.reset_peak()
            window_start, start_bytes = self.tracker.events, self.tracker.live_bytes
            flop_counter = FlopCounter()
            for index in range(steps):
                if index == steps - 1:
                    timeline_start = len(self.tracker.timeline) - 1
                    self.tracker.op_observers.append(flop_counter)
                self._step()
            self.tracker.op_observers.remove(flop_counter)
            self._tag_persistent_state()
            survivors = self._gradients_in_zero_grad_order()
        events = self._take_trace()
        born_here = [block for allocated, block in events if allocated and block.died is None and not block.excluded]
        order = {id(block): index for index, block in enumerate(survivors)}
        born_here.sort(key=lambda block: order.get(id(block), len(order)))
        timeline = self.tracker.timeline
        return StepRecord(
            peak_bytes=self.tracker.peak_bytes,
            window_start=window_start,
            backward_starts=[event for (event, phase, _), (_, before, _) in zip(timeline[1:], timeline)
                             if phase == BACKWARD and before != BACKWARD],
            live_at_peak=self.tracker.live_blocks_at(self.tracker.peak_event),
            timeline=timeline[timeline_start:],
            flops=flop_counter.total,
            previous_gradients_irrelevant=self._previous_gradients_irrelevant(previous_gradients, window_start,
                                                                              start_bytes),
            step_trace=StepTrace(events, window_start, born_here),
            trains=self.setup.trains,
        )

    def _previous_gradients_irrelevant(self, previous: list[Block], window_start: int, start_bytes: int) -> bool:
        if any(block.died is None for block in previous):
            return False
        freed = max((block.died for block in previous), default=window_start)
        if any(window_start < block.born <= freed for block in self.tracker.blocks):
            return False  # something was allocated while they were still alive
        own = sum(block.nbytes for block in self.tracker.live_blocks() if GRADIENT in block.tags)
        start_with_own = start_bytes - sum(block.nbytes for block in previous) + own
        return self.tracker.peak_event > freed and self.tracker.peak_bytes >= start_with_own

    def replace_batch(self, make_batch: Callable[[], object],
                      make_plan: Callable[[TrainingSetup], object] | None = None) -> None:
        """Swap in another batch (e.g. another batch size); the old one is freed as a GPU run would free it.
        `make_plan(setup)`, if given, gives the step plan that goes with it (e.g. a micro-batch size)."""
        self._take_trace()
        with self.active():
            plan = self.setup.plan if make_plan is None else make_plan(self.setup)
            self.setup = replace(self.setup, batch=make_batch(), plan=plan)
        self.batch_events = self._take_trace()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Everything the replay needs switched on, for the duration of one call."""
        gc_was_enabled = gc.isenabled()
        gc.disable()
        hooks = [torch.nn.modules.module.register_module_forward_pre_hook(self._enter_module),
                 torch.nn.modules.module.register_module_forward_hook(self._leave_module, always_call=True)]
        self.tracker.phase_of = self._phase
        self.tracker.origin = self._origin
        self.tracker.outside = self._in_a_first_import
        self._modules_known = len(sys.modules)
        try:
            with contextlib.ExitStack() as stack:
                if self._fake_mode is not None:
                    stack.enter_context(self._fake_mode)
                stack.enter_context(cuda_autocast_policy())
                stack.enter_context(cuda_sdpa_model())
                stack.enter_context(torch.enable_grad())  # a training step, whatever the caller's grad mode
                stack.enter_context(self.tracker)
                yield
        except Exception as error:
            if self.fake and (isinstance(error, _FAKE_ERRORS) or hasattr(error, "failed_op")):
                raise CadbenchError(_describe_failure(self.label, error)) from None
            raise
        finally:
            for hook in hooks:
                hook.remove()
            self._module_stack.clear()
            if gc_was_enabled:
                gc.enable()

    def _in_a_first_import(self) -> bool:
        """Whether the op being run comes from the top-level code of a module whose import started in this replay
        call: a `<module>` frame of a module being initialised (importlib sets `__spec__._initializing` while a
        module's code runs, after putting it in sys.modules) between the op and the replay's own frame, where the
        setup's code was called from. The walk stops there, so the step of a replay started by a module that is itself
        being imported still counts. It is only needed while sys.modules has grown since a walk last found no import."""
        if len(sys.modules) == self._modules_known:
            return False
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals is not _REPLAY_GLOBALS:
            if frame.f_code.co_name == "<module>" and getattr(frame.f_globals.get("__spec__"), "_initializing", False):
                return True
            frame = frame.f_back
        self._modules_known = len(sys.modules)
        return False

    def _step(self) -> None:
        self._set_optimizer_phase(False)
        self.setup.step()
        self._set_optimizer_phase(False)
        self._exclude_host_resident_state()

    # -- labels -----------------------------------------------------------------------------------------------
    def _phase(self) -> str:
        if self._after_optimizer_started:
            return OPTIMIZER
        return BACKWARD if torch._C._current_graph_task_id() != -1 else FORWARD

    def _origin(self) -> str:
        return self._module_stack[-1] if self._module_stack else ""  # modules only run during forward

    def _set_optimizer_phase(self, started: bool) -> None:
        """The optimizer phase runs from the optimizer's step to the end of the training step (its last frees)."""
        self._after_optimizer_started = started

    def _enter_module(self, module: torch.nn.Module, _inputs) -> None:
        self._module_stack.append(self._module_names.get(id(module), type(module).__name__))

    def _leave_module(self, _module: torch.nn.Module, _inputs, _outputs) -> None:
        if self._module_stack:
            self._module_stack.pop()

    # -- what persists between steps ----------------------------------------------------------------------------
    def _tag_persistent_state(self) -> None:
        """Tag the blocks of parameters, gradients and optimizer states (categories of the breakdown)."""
        module = self.setup.module
        tagged = [(PARAMETER, p) for p in module.parameters()]
        tagged += [(GRADIENT, p.grad) for p in module.parameters() if p.grad is not None]
        tagged += [(OPTIMIZER_STATE, value) for value in self._optimizer_states()]
        for tag, tensor in tagged:
            block = self.tracker.block_of(tensor)
            if block is not None:
                block.tags.add(tag)

    def _take_trace(self) -> list[tuple[bool, Block]]:
        """The allocations and frees recorded since the last call."""
        events, self.tracker.trace = self.tracker.trace, []
        return events

    def _gradients_in_zero_grad_order(self) -> list[Block]:
        """The gradients' blocks in the order `zero_grad(set_to_none=True)` frees them (a block shared by several
        gradients goes when the last of them is dropped)."""
        last_use: dict[int, tuple[int, Block]] = {}
        optimizer = self.setup.optimizer
        parameters = [p for group in optimizer.param_groups for p in group["params"]] if optimizer else []
        for index, parameter in enumerate(parameters):
            block = self.tracker.block_of(parameter.grad) if parameter.grad is not None else None
            if block is not None:
                last_use[id(block)] = (index, block)
        return [block for _, block in sorted(last_use.values(), key=lambda item: item[0])]

    def _batch_tensors(self) -> list[torch.Tensor]:
        return [value for value in vars(self.setup.batch).values() if isinstance(value, torch.Tensor)]

    def _setup_tensors(self) -> list[torch.Tensor]:
        module = self.setup.module
        tensors = [*module.parameters(), *module.buffers()]
        tensors += [p.grad for p in module.parameters() if p.grad is not None]
        return tensors + self._optimizer_states() + self._batch_tensors()

    def _optimizer_states(self) -> list[torch.Tensor]:
        """The tensors in the optimizer's state (none without an optimizer: an inference step)."""
        optimizer = self.setup.optimizer
        if optimizer is None:
            return []
        return [value for state in optimizer.state.values() for value in state.values()
                if isinstance(value, torch.Tensor)]

    def _exclude_host_resident_state(self) -> None:
        """torch.optim keeps `step` counters on the host unless `capturable` or `fused`: not GPU memory."""
        optimizer = self.setup.optimizer
        for group in optimizer.param_groups if optimizer is not None else ():
            if group.get("capturable") or group.get("fused"):
                continue
            for parameter in group["params"]:
                step = optimizer.state.get(parameter, {}).get("step")
                if isinstance(step, torch.Tensor):
                    self.tracker.exclude(step)


_REPLAY_GLOBALS = globals()

_FAKE_ERRORS = (
    fake_tensor.UnsupportedOperatorException,
    fake_tensor.DataDependentOutputException,
    fake_tensor.DynamicOutputShapeException,
    fake_tensor.UnsupportedFakeTensorException,
)


def _describe_failure(label: str, error: Exception) -> str:
    """One line: which op of which method could not be replayed on fake tensors, and why."""
    op = getattr(error, "func", None) or getattr(error, "failed_op", None)
    why = {
        fake_tensor.UnsupportedOperatorException: "has no fake-tensor implementation",
        fake_tensor.DataDependentOutputException: "reads tensor values (data-dependent)",
        fake_tensor.DynamicOutputShapeException: "has an output shape that depends on tensor values",
    }.get(type(error))
    if why is None:
        detail = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        why = f"failed on fake tensors ({type(error).__name__}: {detail})" if detail else "failed on fake tensors"
    return (f"cannot estimate memory for {label}: op {op if op is not None else '(unknown)'} {why}; "
            f"the GPU-free estimate needs every op of the training step to run on fake tensors")


def _method_name(setup: TrainingSetup) -> str:
    module = setup.module
    return f"method {getattr(module, 'name', type(module).__name__)}"
