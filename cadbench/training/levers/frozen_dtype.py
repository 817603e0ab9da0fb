"""Frozen weights stored in bf16: half the memory of every parameter that does not train.

Trainable parameters, their gradients and AdamW's states stay float32. The numerics are those of the plain step with
the frozen weights rounded to bf16 once, and nothing else: each frozen parameter is stored in bf16 and read through
a `torch.nn.utils.parametrize` parametrization that returns it upcast to float32 (exact), so every op computes in
the dtype it computed in before (float32, or what autocast picks) and no fp32 activation ever meets a bf16 weight.

The upcast copy lives only while an op uses it. Where autograd would save it for backward (a frozen Linear inside
an encoder that backward runs through saves its weight to compute the input's gradient), the step's saved-tensor
hook stores the bf16 original instead and upcasts it again when backward unpacks it, so no float32 copy of a frozen
weight is kept between forward and backward. Under autocast the half-precision copy autocast makes of each weight
is saved as in the plain step.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from cadbench.training.levers.base import Lever

STORAGE_DTYPES = {"bf16": torch.bfloat16}


class UpcastRegistry:
    """Which storages are float32 upcasts of stored half-precision weights, and the saved-tensor hooks using it."""

    def __init__(self) -> None:
        self._upcasts: dict[int, tuple[weakref.ref, torch.Tensor]] = {}

    def note(self, upcast: torch.Tensor, stored: torch.Tensor) -> None:
        storage = upcast.untyped_storage()
        key = id(storage)
        self._upcasts[key] = (weakref.ref(storage, lambda _ref, key=key: self._upcasts.pop(key, None)), stored)

    def pack(self, tensor: torch.Tensor) -> Any:
        entry = self._upcasts.get(id(tensor.untyped_storage()))
        if entry is None or entry[0]() is not tensor.untyped_storage():
            return tensor
        return _Stored(entry[1], tuple(tensor.shape), tensor.stride(), tensor.storage_offset())

    @staticmethod
    def unpack(packed: Any) -> torch.Tensor:
        return packed.upcast() if isinstance(packed, _Stored) else packed

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


@dataclass(frozen=True)
class _Stored:
    """A saved view of an upcast weight, kept as its stored original and the view's geometry."""

    stored: torch.Tensor
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int

    def upcast(self) -> torch.Tensor:
        return self.stored.float().as_strided(self.size, self.stride, self.offset)


class Upcast(nn.Module):
    """The parametrization: the stored half-precision tensor, read as float32."""

    def __init__(self, registry: UpcastRegistry) -> None:
        super().__init__()
        self.registry = registry

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        upcast = stored.float()
        self.registry.note(upcast, stored)
        return upcast


@dataclass(frozen=True)
class FrozenWeightsDtype(Lever):
    field = "frozen_dtype"
    dtype: str  # "bf16"

    @classmethod
    def from_cell(cls, cell) -> "FrozenWeightsDtype | None":
        return None if cell.frozen_dtype == "fp32" else cls(cell.frozen_dtype)

    def apply(self, trainee, plan):
        registry = UpcastRegistry()
        frozen = [(module, name, parameter) for module in trainee.method.modules()
                  for name, parameter in module._parameters.items()
                  if parameter is not None and not parameter.requires_grad and parameter.dtype == torch.float32]
        for module, name, parameter in frozen:
            with torch.no_grad():
                parameter.data = parameter.data.to(STORAGE_DTYPES[self.dtype])
            parametrize.register_parametrization(module, name, Upcast(registry), unsafe=True)
        return replace(plan, contexts=(*plan.contexts, registry.hooks))
