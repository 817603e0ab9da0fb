"""PyTorch's CUDA caching-allocator settings (`PYTORCH_CUDA_ALLOC_CONF`), parsed once into a typed object.

The grammar and the checks follow the allocator's own parser, so a setting PyTorch refuses is refused here too, in
one line naming the key: `c10/core/AllocatorConfig.{h,cpp}` (`ConfigTokenizer`, `AcceleratorAllocatorConfig::
parseArgs`, `parseMaxSplitSize`, `parseMaxNonSplitRoundingSize`, `parseRoundUpPower2Divisions`,
`parseLargeSegmentSize`, `parseExpandableSegments`, `roundup_power2_divisions(size)`) and
`c10/cuda/CUDAAllocatorConfig.h` (the CUDA-only keys). The text is ``key:value`` pairs separated by commas; a value
may be a bracketed list (``roundup_power2_divisions:[256:4,>:1]``); whitespace is ignored.

Settings fall in three groups:
* simulated (they change where blocks go): `max_split_size_mb`, `max_non_split_rounding_mb`,
  `roundup_power2_divisions`, `expandable_segments`, `large_segment_size_mb`;
* accepted, no effect on device memory layout (host/pinned memory, locking, IPC, graph capture): recorded only;
* valid for PyTorch but not simulated (`backend:cudaMallocAsync`, `per_process_memory_fraction`, and
  `garbage_collection_threshold` together with a memory fraction): the configuration parses, and `not_simulated`
  names them, so an estimate says it cannot give reserved memory instead of giving a wrong figure.

`garbage_collection_threshold` alone changes nothing: the allocator runs that collection only when a per-process
memory fraction is set (`DeviceCachingAllocator::malloc` in `c10/cuda/CUDACachingAllocator.cpp` calls
`garbage_collect_cached_blocks` only `if (set_fraction && garbage_collection_threshold() > 0.0)`, and `set_fraction`
becomes true only through `setMemoryFraction`, which `per_process_memory_fraction` or
`torch.cuda.set_per_process_memory_fraction` calls; a training step in cadbench calls neither). So the threshold alone
is simulated as PyTorch's defaults, and the estimate says so in its notes (`AllocatorConfig.notes`).

Where PyTorch reads the settings from: `PYTORCH_ALLOC_CONF` first, then `PYTORCH_CUDA_ALLOC_CONF` (the order in which
`AcceleratorAllocatorConfig::instance()` looks, for the keys simulated here). This module imports nothing heavy:
`RunOptions` validates its `alloc_conf` with it while the command line is parsed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from cadbench.errors import CadbenchError

MIB = 1 << 20
ENVIRONMENT_VARIABLES = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")
LARGE_BUFFER_BYTES = 20 * MIB  # kLargeBuffer: the default large segment, and the floor of the two *_mb settings
MIN_LARGE_ALLOC_BYTES = 10 * MIB  # kMinLargeAlloc: large_segment_size_mb must exceed it
ROUNDUP_INTERVALS = 16  # kRoundUpPowerOfTwoIntervals: one division count per power of two from 1 MiB to 32 GiB+

SIMULATED_KEYS = ("max_split_size_mb", "max_non_split_rounding_mb", "roundup_power2_divisions",
                  "expandable_segments", "large_segment_size_mb")
# and backend:cudaMallocAsync; garbage_collection_threshold only beside per_process_memory_fraction (see above)
NOT_SIMULATED_KEYS = ("garbage_collection_threshold", "per_process_memory_fraction")
NO_LAYOUT_EFFECT_KEYS = ("backend", "release_lock_on_cudamalloc", "release_lock_on_hipmalloc",
                         "pinned_use_cuda_host_register", "pinned_use_hip_host_register",
                         "pinned_num_register_threads", "pinned_use_background_threads",
                         "pinned_reserve_segment_size_mb", "pinned_free_catch_all", "pinned_max_round_threshold",
                         "pinned_max_cached_size", "graph_capture_record_stream_reuse", "throw_on_cudamalloc_oom",
                         "expandable_segments_handle_type")
KNOWN_KEYS = SIMULATED_KEYS + NOT_SIMULATED_KEYS + NO_LAYOUT_EFFECT_KEYS
_UNLIMITED = 2**64 - 1  # std::numeric_limits<size_t>::max(): max_split_size's default, "no limit"


@dataclass(frozen=True)
class AllocatorConfig:
    """The allocator settings a simulation runs with; the defaults are PyTorch's when nothing is set.

    `roundup_power2_divisions[i]` applies to requests in [2^i MiB, 2^(i+1) MiB) (index 0 also below 1 MiB, index
    15 also above); 0 or 1 means plain 512-byte rounding.
    """

    max_split_size: int = _UNLIMITED  # blocks this large or larger are never split
    max_non_split_rounding: int = LARGE_BUFFER_BYTES  # an oversize request may take a cached block this much larger
    roundup_power2_divisions: tuple[int, ...] = (0,) * ROUNDUP_INTERVALS
    expandable_segments: bool = False
    large_segment_size: int = LARGE_BUFFER_BYTES  # segment for large-pool requests under 10 MiB
    text: str = ""  # the settings as given (canonical: whitespace removed), "" for PyTorch's defaults
    not_simulated: tuple[str, ...] = field(default=(), compare=False)  # keys set that the simulation cannot model
    # keys set that change nothing a simulation would see, with why (see `notes`)
    without_effect: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, text: str | None) -> "AllocatorConfig":
        """The settings in `text` (PYTORCH_CUDA_ALLOC_CONF syntax); raises CadbenchError naming the bad key."""
        return _Parser(text or "").parse()

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> "AllocatorConfig":
        return cls.parse(environment_text(environ))

    def divisions_for(self, size: int) -> int:
        """`AcceleratorAllocatorConfig::roundup_power2_divisions(size)`: the division count for a request."""
        index = max(0, size.bit_length() - 1 - 20)
        return self.roundup_power2_divisions[min(index, ROUNDUP_INTERVALS - 1)]

    @property
    def label(self) -> str:
        """What a result row records: the settings text, or 'default' when nothing is set."""
        return self.text or "default"

    @property
    def simulated(self) -> bool:
        return not self.not_simulated

    @property
    def notes(self) -> tuple[str, ...]:
        """What an estimate under these settings must say about them (a setting that changes nothing)."""
        if "garbage_collection_threshold" not in self.without_effect:
            return ()
        return ("Allocator: garbage_collection_threshold is set without per_process_memory_fraction; PyTorch's "
                "caching allocator runs that collection only when a per-process memory fraction is set "
                "(CUDACachingAllocator.cpp, DeviceCachingAllocator::malloc), so on its own it changes nothing, and "
                "reserved memory and the OOM line are simulated without it.",)

    @property
    def why_not_simulated(self) -> str | None:
        """Why an estimate under these settings has no reserved memory or OOM line, or None when it has them."""
        if self.simulated:
            return None
        return (f"allocator setting {', '.join(self.not_simulated)} is not simulated (the caching-allocator simulation "
                f"would ignore it); measure on a GPU (cadbench run)")


def environment_text(environ: dict[str, str] | None = None) -> str | None:
    """The allocator settings PyTorch would read from the environment, or None when none is set."""
    environ = os.environ if environ is None else environ
    for name in ENVIRONMENT_VARIABLES:
        value = environ.get(name)
        if value is not None and value.strip():
            return value
    return None


def resolve(text: str | None, environ: dict[str, str] | None = None) -> str:
    """The settings a run uses, validated, whitespace removed: `text` if given, else the environment's; "" for
    PyTorch's defaults. Raises CadbenchError naming the bad key (and the variable it came from)."""
    origin = "--alloc-conf"
    if text is None:
        text = environment_text(environ)
        origin = next((name for name in ENVIRONMENT_VARIABLES if (environ or os.environ).get(name, "").strip()),
                      origin)
    try:
        return AllocatorConfig.parse(text).text
    except CadbenchError as error:
        raise CadbenchError(f"{origin}: {error}") from None


class _Parser:
    """`AcceleratorAllocatorConfig::parseArgs` over `ConfigTokenizer`'s tokens, checking as PyTorch checks."""

    def __init__(self, text: str) -> None:
        self.text = re.sub(r"\s+", "", text)
        self.tokens = [token for token in re.split(r"([,:\[\]])", self.text) if token]
        self.values: dict = {}
        self.not_simulated: list[str] = []

    def parse(self) -> AllocatorConfig:
        index = 0
        while index < len(self.tokens):
            key = self.tokens[index]
            if key not in KNOWN_KEYS:
                raise CadbenchError(f"allocator setting {key!r} is not one PyTorch knows (in {self.text!r}); "
                                    f"simulated: {', '.join(SIMULATED_KEYS)} ({len(KNOWN_KEYS) - len(SIMULATED_KEYS)} "
                                    f"others accepted, see cadbench.estimator.alloc_conf)")
            self._expect(index + 1, ":", key)
            index = getattr(self, f"_parse_{key}", self._parse_other)(key, index + 2)
            if index + 1 < len(self.tokens):
                self._expect(index + 1, ",", key)  # a trailing comma is accepted, as PyTorch accepts it
            index += 2
        without_effect = ()
        fraction_set = "per_process_memory_fraction" in self.not_simulated
        if "garbage_collection_threshold" in self.not_simulated and not fraction_set:
            self.not_simulated.remove("garbage_collection_threshold")  # no fraction, no collection (module docstring)
            without_effect = ("garbage_collection_threshold",)
        return AllocatorConfig(**self.values, text=self.text, not_simulated=tuple(self.not_simulated),
                               without_effect=without_effect)

    # -- values -------------------------------------------------------------------------------------------------
    def _parse_max_split_size_mb(self, key: str, index: int) -> int:
        self.values["max_split_size"] = self._megabytes(key, index, minimum=LARGE_BUFFER_BYTES // MIB)
        return index

    def _parse_max_non_split_rounding_mb(self, key: str, index: int) -> int:
        self.values["max_non_split_rounding"] = self._megabytes(key, index, minimum=LARGE_BUFFER_BYTES // MIB)
        return index

    def _parse_large_segment_size_mb(self, key: str, index: int) -> int:
        self.values["large_segment_size"] = self._megabytes(key, index, minimum=MIN_LARGE_ALLOC_BYTES // MIB + 1)
        return index

    def _parse_expandable_segments(self, key: str, index: int) -> int:
        self.values["expandable_segments"] = self._boolean(key, index)
        return index

    def _parse_roundup_power2_divisions(self, key: str, index: int) -> int:
        divisions = [0] * ROUNDUP_INTERVALS
        if self._token(index, key) != "[":  # one count for every size (the older form)
            value = self._integer(key, index)
            if not _power_of_two(value):
                raise self._error(key, f"the division count must be a power of 2, got {value}")
            self.values["roundup_power2_divisions"] = (value,) * ROUNDUP_INTERVALS
            return index
        last, first = 0, True
        index += 1
        while self._token(index, key) != "]":
            bound = self._token(index, key)
            self._expect(index + 1, ":", key)
            value = self._integer(key, index + 2)
            if value != 0 and not _power_of_two(value):
                raise self._error(key, f"a division count must be 0 or a power of 2, got {value}")
            if bound == ">":
                divisions[last + 1:] = [value] * (ROUNDUP_INTERVALS - last - 1)
            else:
                megabytes = self._integer(key, index)
                if not _power_of_two(megabytes):
                    raise self._error(key, f"an interval bound must be a power of 2 (MiB), got {bound}")
                slot = min(megabytes.bit_length() - 1, ROUNDUP_INTERVALS - 1)
                if first:
                    divisions[:slot] = [value] * slot
                    first = False
                divisions[slot] = value
                last = slot
            index += 3
            if self._token(index, key) != "]":
                self._expect(index, ",", key)
                index += 1
        self.values["roundup_power2_divisions"] = tuple(divisions)
        return index

    def _parse_garbage_collection_threshold(self, key: str, index: int) -> int:
        value = self._number(key, index)
        if not 0.0 < value < 1.0:
            raise self._error(key, f"must lie in (0.0, 1.0), got {value}")
        self.not_simulated.append(key)
        return index

    def _parse_per_process_memory_fraction(self, key: str, index: int) -> int:
        value = self._number(key, index)
        if not 0.0 <= value <= 1.0:
            raise self._error(key, f"must lie in [0.0, 1.0], got {value}")
        self.not_simulated.append(key)
        return index

    def _parse_backend(self, key: str, index: int) -> int:
        value = self._token(index, key)
        if value not in ("native", "cudaMallocAsync"):
            raise self._error(key, f"must be native or cudaMallocAsync, got {value!r}")
        if value == "cudaMallocAsync":
            self.not_simulated.append("backend:cudaMallocAsync")
        return index

    def _parse_other(self, key: str, index: int) -> int:
        """A setting with no effect on device blocks: its value is checked for form only, then skipped."""
        if self._token(index, key) == "[":
            while self._token(index, key) != "]":
                index += 1
        return index

    # -- tokens -------------------------------------------------------------------------------------------------
    def _token(self, index: int, key: str) -> str:
        if index >= len(self.tokens):
            raise self._error(key, "its value is missing")
        return self.tokens[index]

    def _expect(self, index: int, token: str, key: str) -> None:
        if self._token(index, key) != token:
            raise self._error(key, f"expected {token!r}, got {self.tokens[index]!r}")

    def _integer(self, key: str, index: int) -> int:
        token = self._token(index, key)
        if not token.isdigit():
            raise self._error(key, f"expected a whole number, got {token!r}")
        return int(token)

    def _number(self, key: str, index: int) -> float:
        token = self._token(index, key)
        try:
            return float(token)
        except ValueError:
            raise self._error(key, f"expected a number, got {token!r}") from None

    def _boolean(self, key: str, index: int) -> bool:
        token = self._token(index, key)
        if token not in ("True", "False"):
            raise self._error(key, f"expected True or False, got {token!r}")
        return token == "True"

    def _megabytes(self, key: str, index: int, minimum: int) -> int:
        value = self._integer(key, index)
        if value < minimum:
            raise self._error(key, f"must be at least {minimum} (MiB), got {value}")
        return min(value * MIB, _UNLIMITED)

    def _error(self, key: str, why: str) -> CadbenchError:
        return CadbenchError(f"allocator setting {key}: {why} (in {self.text!r})")


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0
