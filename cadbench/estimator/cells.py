"""Estimates of grid cells (method, backbone, batch size, precision), reusing work between cells.

Building a model and running the warm-up step cost as much as the measured step. What a step leaves for the next one
(parameters, optimizer states, gradients) is almost the same whatever the batch size, so one replay per
(method, backbone, precision) is built once, warmed up once at batch size 1, and then measured at each batch size
asked for, with that batch swapped in. The one exception is checked on every measurement: the gradients' layout can
depend on the batch size (one image leaves views of a shared storage); unless the replay shows they were freed
before anything else happened and the peak came later and higher (see StepRecord.previous_gradients_irrelevant),
the cell is measured again after a step at its own batch size. Tests check this equals a fresh replay at that batch
size (two steps): same peak, breakdown and FLOPs. Finished estimates are kept too. All of it lives in this process
only; `clear_cache()` drops it.
"""

from __future__ import annotations

from cadbench.backbones import get_backbone
from cadbench.errors import CadbenchError
from cadbench.estimator.estimate import MemoryEstimate, summarize
from cadbench.estimator.replay import Replay, clear_shared_cache
from cadbench.registry import get_method
from cadbench.training.step import check_precision, make_training_setup, random_batch

WARM_UP_BATCH_SIZE = 1

_replays: dict[tuple[str, str, str, int], Replay] = {}
_estimates: dict[tuple[str, str, int, str, int], MemoryEstimate] = {}


def estimate_cell(method: str, backbone: str, batch_size: int, precision: str = "fp32",
                  seed: int = 0) -> MemoryEstimate:
    """Estimated peak training memory of `method` on `backbone` at `batch_size` (see estimate.estimate_setup)."""
    get_method(method), get_backbone(backbone), check_precision(precision)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CadbenchError(f"batch size must be a positive integer, got {batch_size!r}")
    key = (method, backbone, batch_size, precision, seed)
    if key not in _estimates:
        replay = _warm_replay(method, backbone, precision, seed)
        image_size = get_backbone(backbone).image_size
        try:
            replay.replace_batch(lambda: random_batch(image_size, batch_size, seed=seed))
            record = replay.measure(1)
            if not record.previous_gradients_irrelevant:
                # The gradients of the step before (at another batch size) may have changed the peak; a GPU run
                # warms up at its own batch size: measure again, now after a step at this one.
                record = replay.measure(1)
        except Exception:
            _replays.pop((method, backbone, precision, seed), None)  # a step that stopped half-way: start afresh
            raise
        _estimates[key] = summarize(record)
    return _estimates[key]


def clear_cache() -> None:
    """Forget warm replays, finished estimates and cached op answers (e.g. to time a cold start)."""
    _replays.clear()
    _estimates.clear()
    clear_shared_cache()


def _warm_replay(method: str, backbone: str, precision: str, seed: int) -> Replay:
    key = (method, backbone, precision, seed)
    if key not in _replays:
        replay = Replay(lambda: make_training_setup(method, backbone, WARM_UP_BATCH_SIZE, precision, seed=seed),
                        label=f"method {method} on {backbone}")
        replay.warm_up(1)
        _replays[key] = replay
    return _replays[key]
