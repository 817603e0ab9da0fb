"""Estimates of grid cells, reusing work between cells.

Building a model and running the warm-up step cost as much as the measured step. What a step leaves for the next one
(parameters, optimizer states, gradients) is almost the same whatever the batch size, so one replay per
cell with its batch size left out is built once, warmed up once at batch size 1, and then measured at each batch size
asked for, with that batch swapped in (and the cell's per-batch lever settings, a micro-batch or an encoder chunk,
set on it: `levers.rebatch`). The one exception is checked on every measurement: the gradients' layout can
depend on the batch size (one image leaves views of a shared storage); unless the replay shows they were freed
before anything else happened and the peak came later and higher (see StepRecord.previous_gradients_irrelevant),
the cell is measured again after a step at its own batch size. Tests check this equals a fresh replay at that batch
size (two steps): same peak, breakdown and FLOPs. The caching-allocator simulation runs on the history a GPU run at
the cell's batch size would have (allocation_trace builds it from the shared replay's pieces), so its figures do not
depend on which batch sizes the replay measured before. Finished estimates are kept too, per allocator settings.
All of it lives in this process only; `clear_cache()` drops it.
"""

from __future__ import annotations

from dataclasses import replace

from cadbench.backbones import cell_pixels
from cadbench.errors import CadbenchError
from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.estimator.allocation_trace import AllocationTrace
from cadbench.estimator.estimate import MemoryEstimate, allocation_trace, summarize
from cadbench.datasets.batch import random_batch
from cadbench.estimator.replay import Replay, StepRecord, clear_shared_cache
from cadbench.training.levers import rebatch
from cadbench.training.setup import make_training_setup
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.levers import declared_levers
from cadbench.vocabulary.prompts import objects_per_image

WARM_UP_BATCH_SIZE = 1
# The replay's time and memory grow with the batch size (SAM's mask decoder runs once per image: about 75 ms and
# 1.3 MiB of the estimator's own memory per image on a 2-core CPU, whatever the backbone). 512 images need more
# than 1 TB even in the cheapest full-size cell (decoder_only, vit_b, bf16: ~2.1 GB per image, estimated), beyond
# any single GPU, and one cell at 512 replays in about a minute (1.4 GB RSS); larger ones are refused in one line.
MAX_BATCH_SIZE = 512

_replays: dict[tuple[Cell, int], Replay] = {}  # (the cell at the warm-up batch size, seed) -> warm replay
_estimates: dict[tuple[Cell, int, AllocatorConfig], MemoryEstimate] = {}


def check_estimable(cell: Cell) -> None:
    """Raise CadbenchError (one line) for a cell the estimator will not replay: a batch size above MAX_BATCH_SIZE."""
    if cell.batch_size > MAX_BATCH_SIZE:
        raise CadbenchError(f"batch size {cell.batch_size} is above {MAX_BATCH_SIZE}, the largest the estimator "
                            f"replays (its time and memory grow with the batch size; {MAX_BATCH_SIZE} images of a "
                            f"full-size SAM need more memory than any GPU has)")


def estimate_cell(cell: Cell, seed: int = 0, alloc_conf: AllocatorConfig | None = None) -> MemoryEstimate:
    """Estimated peak training memory of the cell's training step (see estimate.estimate_setup), with reserved
    memory and the OOM line under the allocator settings `alloc_conf` (default: PyTorch's environment variables)."""
    check_estimable(cell)
    config = AllocatorConfig.from_environment() if alloc_conf is None else alloc_conf
    key = (cell, seed, config)
    if key not in _estimates:
        record, trace = _measure(cell, seed)
        _estimates[key] = summarize(record, trace=trace, alloc_conf=config)
    return _estimates[key]


def cell_allocation_trace(cell: Cell, seed: int = 0) -> AllocationTrace:
    """The allocation history a GPU run of the cell would give its caching allocator (see allocation_trace)."""
    return _measure(cell, seed)[1]


def _measure(cell: Cell, seed: int) -> tuple[StepRecord, AllocationTrace]:
    replay = _warm_replay(cell, seed)
    image_size = cell_pixels(cell)
    try:
        prompts = objects_per_image(cell.prompts_per_image)
        replay.replace_batch(lambda: random_batch(image_size, cell.batch_size, seed=seed, prompts=prompts),
                             lambda setup: rebatch(cell, setup.trainee, setup.plan))
        record = replay.measure(1)
        if not record.previous_gradients_irrelevant:
            # The gradients of the step before (at another batch size) may have changed the peak; a GPU run
            # warms up at its own batch size: measure again, now after a step at this one.
            record = replay.measure(1)
    except Exception:
        _replays.pop(_replay_key(cell, seed), None)  # a step that stopped half-way: start afresh
        raise
    return record, allocation_trace(replay, record)


def clear_cache() -> None:
    """Forget warm replays, finished estimates and cached op answers (e.g. to time a cold start)."""
    _replays.clear()
    _estimates.clear()
    clear_shared_cache()


def replay_group(cell: Cell) -> Cell:
    """Cells with the same group are estimated on one warm replay (in one process, that work is shared)."""
    return _replay_key(cell, 0)[0]


def _replay_key(cell: Cell, seed: int) -> tuple[Cell, int]:
    """The warm replay a cell is measured on: the cell at the warm-up batch size, its per-batch levers (micro-batch,
    encoder chunk) at their defaults, which `rebatch` sets for each measurement."""
    per_batch = {lever.name: lever.default for lever in declared_levers() if lever.per_batch}
    return replace(cell, batch_size=WARM_UP_BATCH_SIZE, **per_batch), seed


def _warm_replay(cell: Cell, seed: int) -> Replay:
    key = _replay_key(cell, seed)
    if key not in _replays:
        warm_cell = key[0]
        replay = Replay(lambda: make_training_setup(warm_cell, seed=seed),
                        label=f"method {cell.method} on {cell.backbone}")
        replay.warm_up(1)
        _replays[key] = replay
    return _replays[key]
