"""FLOPs of the ops that run, with the formulas of `torch.utils.flop_counter` (those `FlopCounterMode` uses).

`FlopCounterMode` itself is not used during the replay: it attributes every op to the running modules with hooks that
keep some tensors alive a little longer (it changed the measured peak by 2 KiB at test scale) and costs more than the
replay of the op under fake tensors. Tests check the total equals `FlopCounterMode().get_total_flops()`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import flop_registry


class FlopCounter:
    """Sums FLOPs (a multiply-add counts 2) of the matmuls, convolutions and attention ops it is shown.

    An op observer for `MemoryTracker.op_observers` (one dispatch layer fewer than a mode of its own).
    """

    def __init__(self) -> None:
        self.total = 0
        self._formulas: dict[Any, tuple[Callable, bool] | None] = {}

    def __call__(self, func, args: tuple, kwargs: dict, out) -> None:
        entry = self._formulas.get(func, False)
        if entry is False:
            entry = self._formulas[func] = _formula(func)
        if entry is None:
            return
        formula, takes_shapes = entry
        if takes_shapes:  # what flop_counter.shape_wrapper does: tensors become their shapes
            self.total += formula(*_shapes(args), out_shape=_shapes(out), **_shapes(kwargs))
        else:
            self.total += formula(*args, out_val=out, **kwargs)


def _formula(func) -> tuple[Callable, bool] | None:
    registered = flop_registry.get(getattr(func, "_overloadpacket", None))
    if registered is None:
        return None
    unwrapped = getattr(registered, "__wrapped__", None)
    return (unwrapped, True) if unwrapped is not None else (registered, False)


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (list, tuple)):
        return type(value)(_shapes(item) for item in value) if not isinstance(value, torch.Size) else value
    if isinstance(value, dict):
        return {name: _shapes(item) for name, item in value.items()}
    return value
