"""A fake CUDA device and a fake NVML, so that the GPU measurement protocol is tested end to end on a CPU.

What it replaces: every public function and class of `torch.cuda` (and `torch.cuda.memory`), and the `pynvml`
module. What it models, faithfully to the real ones:

* devices: physical GPUs with a UUID, a name and a capacity; `CUDA_VISIBLE_DEVICES` (indices or `GPU-` UUID
  prefixes, parsing stops at the first invalid entry) maps PyTorch's indices onto them, as CUDA does;
* memory: a caching allocator in miniature. Allocations raise `allocated`; `reserved` grows in 2 MiB segments and
  is kept until `empty_cache`; peaks run until `reset_peak_memory_stats`; going past the capacity (less the CUDA
  context) raises the real `torch.cuda.OutOfMemoryError`;
* time: each device has a clock in milliseconds that launched work advances. Work is asynchronous: an event is
  complete only once the device was synchronised after it was recorded, and `elapsed_time` on an incomplete event
  raises, as `cudaEventElapsedTime` does (cudaErrorNotReady);
* NVML: handles by physical index, `GPU-` UUIDs, the compute processes of each GPU (this process once it holds a
  CUDA context, with context + reserved bytes, plus any other process the config lists); NVML missing (the import
  fails), refusing to start, refusing the process list, hiding this process (containers), or listing it without
  memory (WDDM, MIG).

What it cannot model: tensors in device memory. The training setup therefore asks for its CUDA device as usual
(the fake checks that it does), its tensors stay in CPU memory, and each training step is reported to the fake GPU
as one launch with a stated memory and time profile (`StepProfile`).

Any CUDA or NVML call it does not model raises `FakeCudaError`, a BaseException: `except Exception` in the code
under test cannot swallow it, so the fake cannot silently pass code it never saw.

Every call is logged in order (`FakeCuda.log`), so tests can check the protocol. In a subprocess the fake is
installed by `sitecustomize.py` (this folder on PYTHONPATH) when CADBENCH_FAKE_CUDA names a JSON config; the log is
written to `<log_dir>/<pid>.json` when the process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import types
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

MiB = 1 << 20
GiB = 1 << 30
SEGMENT_BYTES = 2 * MiB  # the caching allocator's large-segment rounding (reserved memory grows in these)
ENVIRONMENT_VARIABLE = "CADBENCH_FAKE_CUDA"
NVML_MODES = ("ok", "missing", "init_fails", "process_list_refused", "process_hidden", "memory_unavailable")


class FakeCudaError(BaseException):
    """A CUDA or NVML call the fake does not model, or one made in a way real CUDA would refuse loudly."""


@dataclass
class FakeGpu:
    uuid: str  # bare lowercase hex, as str(torch.cuda.get_device_properties(i).uuid) prints it
    name: str = "NVIDIA Fake H100 80GB HBM3"
    total_memory: int = 80 * GiB
    other_processes: list[list[int]] = field(default_factory=list)  # [pid, bytes] NVML lists besides this process


@dataclass
class StepProfile:
    """What one training step of a cell does to the fake GPU (used when the harness builds a training setup)."""

    weights_bytes: int = 256 * MiB  # allocated when the model is placed on the device
    optimizer_bytes: int = 512 * MiB  # allocated by the first step and kept (AdamW states)
    bytes_per_image: int = 64 * MiB  # allocated during each step and freed at its end (activations)
    first_step_extra_bytes: int = 1 * GiB  # a one-off transient of the first step (autotuning): not a steady peak
    seconds_per_image: float = 0.05  # step time per image; step n takes (1 + 0.1 * (n % 3)) times that


@dataclass
class FakeCudaConfig:
    gpus: list[FakeGpu]
    nvml: str = "ok"  # one of NVML_MODES
    context_bytes: int = 500 * MiB  # the CUDA context NVML counts beside the allocator's reserved memory
    profile: StepProfile = field(default_factory=StepProfile)
    log_dir: str | None = None  # where a subprocess writes its log

    def __post_init__(self) -> None:
        if self.nvml not in NVML_MODES:
            raise ValueError(f"nvml mode {self.nvml!r} not in {NVML_MODES}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "FakeCudaConfig":
        data = json.loads(text)
        return cls(gpus=[FakeGpu(**gpu) for gpu in data.pop("gpus")], profile=StepProfile(**data.pop("profile")),
                   **data)


def gpus(count: int, **kwargs) -> list[FakeGpu]:
    """`count` physical GPUs with distinct UUIDs."""
    return [FakeGpu(uuid=f"{index:08x}-1111-2222-3333-{index + 0xabc000:012x}", **kwargs) for index in range(count)]


def round_up(nbytes: int, unit: int = SEGMENT_BYTES) -> int:
    return -(-nbytes // unit) * unit


@dataclass
class DeviceState:
    physical: int
    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    clock_ms: float = 0.0
    synchronisations: int = 0
    has_context: bool = False
    launches: int = 0


def visible_devices(variable: str | None, uuids: list[str]) -> list[int]:
    """Physical indices of the devices CUDA shows, in PyTorch's order (CUDA_VISIBLE_DEVICES semantics)."""
    if variable is None:
        return list(range(len(uuids)))
    visible: list[int] = []
    for entry in (part.strip() for part in variable.split(",")):
        if entry.isdigit() and int(entry) < len(uuids):
            index = int(entry)
        elif entry.startswith("GPU-"):
            matches = [i for i, uuid in enumerate(uuids) if f"GPU-{uuid}".startswith(entry)]
            if len(matches) != 1:
                break
            index = matches[0]
        else:
            break  # CUDA stops at the first invalid entry
        if index in visible:
            return []
        visible.append(index)
    return visible


class FakeUuid:
    """Like torch's `_CUuuid`: str() is the bare UUID, `.bytes` its 16 bytes."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text

    @property
    def bytes(self) -> list[int]:
        return list(bytes.fromhex(self._text.replace("-", "")))


class Strict:
    """An object whose unmodelled attributes fail loudly."""

    _what = "object"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (inspect, pickle, copy), not a CUDA call
            raise AttributeError(name)
        raise FakeCudaError(f"{self._what}.{name} is not modelled by the fake CUDA layer")


class FakeProperties(Strict):
    _what = "torch.cuda.get_device_properties(...)"

    def __init__(self, gpu: FakeGpu) -> None:
        self.name = gpu.name
        self.total_memory = gpu.total_memory
        self.uuid = FakeUuid(gpu.uuid)
        self.major, self.minor = 9, 0


class FakeStream(Strict):
    _what = "torch.cuda.Stream"

    def __init__(self, index: int) -> None:
        self.device_index = index

    def is_capturing(self) -> bool:  # no CUDA graph is ever captured here (the optimizer asks before each step)
        return False


class FakeCuda:
    """The fake torch.cuda and pynvml, with the state of every fake GPU and the log of every call."""

    def __init__(self, config: FakeCudaConfig) -> None:
        self.config = config
        self.visible = visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), [gpu.uuid for gpu in config.gpus])
        self.devices = [DeviceState(physical) for physical in self.visible]
        self.current = 0
        self.log: list[list[Any]] = []
        self.nvml_open = 0
        self._events = 0

    # -- the log -------------------------------------------------------------------------------------------------
    def record(self, name: str, detail: Any = None) -> None:
        self.log.append([name, detail])

    def names(self) -> list[str]:
        return [name for name, _ in self.log]

    # -- devices -------------------------------------------------------------------------------------------------
    def index(self, device: Any = None) -> int:
        """torch.cuda's device arguments: None (current), int, 'cuda', 'cuda:N', torch.device('cuda', N)."""
        if device is None:
            index = self.current
        elif isinstance(device, int) and not isinstance(device, bool):
            index = device
        else:
            device = torch.device(device)
            if device.type != "cuda":
                raise ValueError(f"Expected a cuda device, but got: {device}")
            index = self.current if device.index is None else device.index
        if not 0 <= index < len(self.devices):
            raise RuntimeError("CUDA error: invalid device ordinal")
        return index

    def state(self, device: Any = None) -> DeviceState:
        return self.devices[self.index(device)]

    def gpu(self, device: Any = None) -> FakeGpu:
        return self.config.gpus[self.state(device).physical]

    # -- memory --------------------------------------------------------------------------------------------------
    def allocate(self, state: DeviceState, nbytes: int) -> None:
        state.has_context = True
        wanted = state.allocated + nbytes
        reserved = max(state.reserved, round_up(wanted))
        capacity = self.config.gpus[state.physical].total_memory - self.config.context_bytes
        if reserved > capacity:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {nbytes / GiB:.2f} GiB. GPU {self.devices.index(state)} has "
                f"a total capacity of {self.config.gpus[state.physical].total_memory / GiB:.2f} GiB (fake)")
        state.allocated, state.reserved = wanted, reserved
        state.peak_allocated = max(state.peak_allocated, state.allocated)
        state.peak_reserved = max(state.peak_reserved, state.reserved)

    def free(self, state: DeviceState, nbytes: int) -> None:
        state.allocated -= nbytes

    def release_cache(self, device: Any = None) -> None:
        """What the allocator does on its own after a failed cudaMalloc: give cached segments back to the driver."""
        state = self.state(device)
        state.reserved = round_up(state.allocated)

    def run_step(self, *, transient: int, persistent: int = 0, seconds: float, device: Any = None) -> None:
        """One step's kernels, launched on the current stream: memory is allocated now (host side), time passes on
        the device clock, and the device is busy until synchronised."""
        state = self.state(device)
        state.launches += 1
        self.record("launch", {"device": self.index(device), "n": state.launches})
        self.allocate(state, persistent)
        self.allocate(state, transient)
        self.free(state, transient)
        state.clock_ms += seconds * 1000.0

    def process_bytes(self, state: DeviceState) -> int:
        return self.config.context_bytes + state.reserved

    # -- the training setup's placement --------------------------------------------------------------------------
    def placement(self, device: Any, what: str) -> torch.device:
        """The harness asked `what` to build its model (and batch) on CUDA device `device`: logged (tests check
        the harness asked for the GPU), and answered with where the tensors really go (the CPU)."""
        self.record("placement", {"what": what, "device": self.index(device)})
        return torch.device("cpu")

    # -- installation --------------------------------------------------------------------------------------------
    def install(self, patch: Callable[[Any, str, Any], None], set_module: Callable[[str, Any], None]) -> None:
        """Replace torch.cuda's public API and pynvml (via `patch(obj, name, value)` and `set_module(name, module)`,
        e.g. pytest's monkeypatch.setattr / monkeypatch.setitem on sys.modules), and the training setup's
        placement."""
        import cadbench.training.step  # noqa: F401 — first, while torch.cuda is real: torch._dynamo (imported by
        # torchvision) reads attributes of torch.cuda's functions when it is imported

        modelled = TorchCudaApi(self)
        for module in (torch.cuda, torch.cuda.memory):
            for name in getattr(module, "__all__", ()):
                value = getattr(module, name, None)
                if value is None or isinstance(value, types.ModuleType):
                    continue
                if isinstance(value, type) and issubclass(value, BaseException):
                    continue  # torch.cuda.OutOfMemoryError and friends stay the real classes
                if hasattr(modelled, name):
                    patch(module, name, getattr(modelled, name))
                elif callable(value):
                    patch(module, name, unmodelled(f"{module.__name__}.{name}"))
        # torch.accelerator: what torch itself asks the current accelerator (the optimizer checks for CUDA graph
        # capture before each step); `current_accelerator` and `is_available` stay real (they ask torch.cuda)
        for name in torch.accelerator.__all__:
            if name == "current_stream":
                patch(torch.accelerator, name, modelled.accelerator_current_stream)
            elif name not in ("current_accelerator", "is_available") and callable(getattr(torch.accelerator, name)):
                patch(torch.accelerator, name, unmodelled(f"torch.accelerator.{name}"))
        set_module("pynvml", None if self.config.nvml == "missing" else FakeNvml(self))
        self.install_placement(patch)

    def install_placement(self, patch: Callable[[Any, str, Any], None]) -> None:
        import cadbench.training.setup as step_module

        original_setup, original_prepare = step_module.make_training_setup, step_module.prepare
        fake = self

        def make_training_setup(cell, device="cpu", checkpoint=None, seed=0):
            if torch.device(device).type != "cuda":  # the estimator's replay, or a CPU cell: not the fake GPU's
                return original_setup(cell, device=device, checkpoint=checkpoint, seed=seed)
            where = fake.placement(device, "make_training_setup")
            state = fake.state(device)
            fake.allocate(state, fake.config.profile.weights_bytes)
            setup = original_setup(cell, device=where, checkpoint=checkpoint, seed=seed)
            real_step = setup.step
            profile = fake.config.profile

            def step():
                first = state.launches == 0
                fake.run_step(
                    persistent=profile.optimizer_bytes if first else 0,
                    transient=cell.batch_size * profile.bytes_per_image
                    + (profile.first_step_extra_bytes if first else 0),
                    seconds=profile.seconds_per_image * cell.batch_size * (1 + 0.1 * (state.launches % 3)),
                    device=device)
                return real_step()

            setup.step = step
            return setup

        def prepare(method_name, backbone, checkpoint=None, device="cpu", image_size=0):
            if torch.device(device).type == "cuda":
                device = fake.placement(device, "prepare")
            return original_prepare(method_name, backbone, checkpoint=checkpoint, device=device, image_size=image_size)

        patch(step_module, "make_training_setup", make_training_setup)
        patch(step_module, "prepare", prepare)


def unmodelled(name: str) -> Callable[..., Any]:
    def fail(*args, **kwargs):
        raise FakeCudaError(f"{name} is not modelled by the fake CUDA layer (add it there, faithfully, if the "
                            f"measurement needs it)")

    fail.__name__ = name.rsplit(".", 1)[-1]
    return fail


class TorchCudaApi:
    """The torch.cuda functions the harness uses, on the fake devices. Each call is logged."""

    def __init__(self, fake: FakeCuda) -> None:
        self._fake = fake

        class Event(Strict):
            _what = "torch.cuda.Event"

            def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
                fake._events += 1
                self.id = fake._events
                self.enable_timing = enable_timing
                self.device: int | None = None
                self.time_ms: float | None = None
                self.synchronisations_at_record = 0

            def record(self, stream: FakeStream | None = None) -> None:
                index = fake.current if stream is None else stream.device_index
                state = fake.devices[index]
                self.device, self.time_ms = index, state.clock_ms
                self.synchronisations_at_record = state.synchronisations
                fake.record("event.record", self.id)

            def complete(self) -> bool:
                return (self.device is not None
                        and fake.devices[self.device].synchronisations > self.synchronisations_at_record)

            def elapsed_time(self, end: "Event") -> float:
                fake.record("event.elapsed_time", [self.id, end.id])
                if not (self.enable_timing and end.enable_timing):
                    raise RuntimeError("CUDA error: invalid resource handle (events created without timing)")
                if self.time_ms is None or end.time_ms is None:
                    raise RuntimeError("CUDA error: invalid resource handle (event not recorded)")
                if not (self.complete() and end.complete()):
                    raise RuntimeError("CUDA error: device not ready (event not complete: synchronise first)")
                return end.time_ms - self.time_ms

        self.Event = Event

    def is_available(self) -> bool:
        self._fake.record("is_available")
        return bool(self._fake.devices)

    def device_count(self) -> int:
        self._fake.record("device_count")
        return len(self._fake.devices)

    def current_device(self) -> int:
        self._fake.record("current_device")
        if not self._fake.devices:
            raise RuntimeError("No CUDA GPUs are available")
        return self._fake.current

    def get_device_properties(self, device: Any = None) -> FakeProperties:
        self._fake.record("get_device_properties", self._fake.index(device))
        return FakeProperties(self._fake.gpu(device))

    def get_device_name(self, device: Any = None) -> str:
        self._fake.record("get_device_name", self._fake.index(device))
        return self._fake.gpu(device).name

    def current_stream(self, device: Any = None) -> FakeStream:
        self._fake.record("current_stream", self._fake.index(device))
        return FakeStream(self._fake.index(device))

    def accelerator_current_stream(self, device: Any = None) -> FakeStream:
        self._fake.record("accelerator.current_stream", self._fake.index(device))
        return FakeStream(self._fake.index(device))

    def synchronize(self, device: Any = None) -> None:
        index = self._fake.index(device)
        self._fake.record("synchronize", index)
        self._fake.devices[index].synchronisations += 1

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        state = self._fake.state(device)
        self._fake.record("reset_peak_memory_stats", self._fake.index(device))
        state.peak_allocated, state.peak_reserved = state.allocated, state.reserved

    def max_memory_allocated(self, device: Any = None) -> int:
        self._fake.record("max_memory_allocated", self._fake.index(device))
        return self._fake.state(device).peak_allocated

    def max_memory_reserved(self, device: Any = None) -> int:
        self._fake.record("max_memory_reserved", self._fake.index(device))
        return self._fake.state(device).peak_reserved

    def empty_cache(self) -> None:
        self._fake.record("empty_cache")
        for state in self._fake.devices:
            state.reserved = round_up(state.allocated)

    def manual_seed_all(self, seed: int) -> None:  # torch.manual_seed calls it: the CUDA generators are seeded
        self._fake.record("manual_seed_all", int(seed))

    def manual_seed(self, seed: int) -> None:
        self._fake.record("manual_seed", int(seed))


class FakeNvml(types.ModuleType):
    """The `pynvml` module (nvidia-ml-py) on the fake GPUs."""

    def __init__(self, fake: FakeCuda) -> None:
        super().__init__("pynvml")
        self._fake = fake

        class NVMLError(Exception):
            def __init__(self, value: str) -> None:
                super().__init__(value)

        class NVMLError_Uninitialized(NVMLError):
            pass

        class NVMLError_DriverNotLoaded(NVMLError):
            pass

        class NVMLError_NoPermission(NVMLError):
            pass

        class NVMLError_InvalidArgument(NVMLError):
            pass

        self.NVMLError = NVMLError
        self.NVMLError_Uninitialized = NVMLError_Uninitialized
        self.NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
        self.NVMLError_NoPermission = NVMLError_NoPermission
        self.NVMLError_InvalidArgument = NVMLError_InvalidArgument

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (inspect, pickle, copy), not an NVML call
            raise AttributeError(name)
        raise FakeCudaError(f"pynvml.{name} is not modelled by the fake NVML")

    def _require_init(self) -> None:
        if self._fake.nvml_open <= 0:
            raise self.NVMLError_Uninitialized("Uninitialized")

    def nvmlInit(self) -> None:
        self._fake.record("nvml.init")
        if self._fake.config.nvml == "init_fails":
            raise self.NVMLError_DriverNotLoaded("Driver Not Loaded")
        self._fake.nvml_open += 1

    def nvmlShutdown(self) -> None:
        self._fake.record("nvml.shutdown")
        self._require_init()
        self._fake.nvml_open -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_init()
        return "570.86.15"

    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self._fake.config.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> "NvmlHandle":
        self._require_init()
        self._fake.record("nvml.handle_by_index", index)
        if not 0 <= index < len(self._fake.config.gpus):
            raise self.NVMLError_InvalidArgument("Invalid Argument")
        return NvmlHandle(index)

    def nvmlDeviceGetUUID(self, handle: "NvmlHandle") -> str:
        self._require_init()
        return f"GPU-{self._fake.config.gpus[handle.physical].uuid}"

    def nvmlDeviceGetComputeRunningProcesses(self, handle: "NvmlHandle") -> list[types.SimpleNamespace]:
        self._require_init()
        fake = self._fake
        fake.record("nvml.processes", handle.physical)
        if fake.config.nvml == "process_list_refused":
            raise self.NVMLError_NoPermission("Insufficient Permissions")
        listed = [types.SimpleNamespace(pid=pid, usedGpuMemory=used)
                  for pid, used in fake.config.gpus[handle.physical].other_processes]
        for state in fake.devices:
            if state.physical == handle.physical and state.has_context and fake.config.nvml != "process_hidden":
                used = None if fake.config.nvml == "memory_unavailable" else fake.process_bytes(state)
                listed.append(types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=used))
        return listed


@dataclass(frozen=True)
class NvmlHandle:
    physical: int


def install_from_environment() -> FakeCuda | None:
    """For sitecustomize: install the fake for the whole process if CADBENCH_FAKE_CUDA names a config file."""
    path = os.environ.get(ENVIRONMENT_VARIABLE)
    if not path:
        return None
    with open(path, encoding="utf-8") as handle:
        fake = FakeCuda(FakeCudaConfig.from_json(handle.read()))
    fake.install(setattr, sys.modules.__setitem__)
    if fake.config.log_dir:
        def write_log() -> None:
            target = os.path.join(fake.config.log_dir, f"{os.getpid()}.json")
            with open(target, "w", encoding="utf-8") as stream:
                json.dump({"argv": sys.argv, "log": fake.log}, stream)

        atexit.register(write_log)
    return fake


def install_for_test(monkeypatch, config: FakeCudaConfig) -> FakeCuda:
    """Install the fake in this (pytest) process for one test; pytest's monkeypatch undoes it afterwards."""
    fake = FakeCuda(config)
    fake.install(monkeypatch.setattr, lambda name, module: monkeypatch.setitem(sys.modules, name, module))
    return fake
