"""Parameter counts of full-size models, taken on the meta device: no memory allocated, no weights initialised."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from cadbench.backbones import BuiltSam, build_sam
from cadbench.registry import parse_method_spec


@dataclass(frozen=True)
class ParameterCount:
    method: str
    method_options: str  # canonical, '' at the method's defaults (see cadbench.harness.grid.Cell)
    backbone: str
    test_scale: bool
    trainable_params: int
    total_params: int

    def as_dict(self) -> dict:
        return asdict(self)


def count_parameters(method_spec: str, backbone: str) -> ParameterCount:
    """Counts of the method a spec names ('lora:rank=16'), options included, wrapped around `backbone`."""
    spec = parse_method_spec(method_spec)
    built = _meta_skeleton(backbone)
    with torch.device("meta"):
        method = spec.build(copy.deepcopy(built.sam))  # a method changes the model it wraps: each gets a copy
    trainable = sum(parameter.numel() for parameter in method.trainable_parameters())
    total = sum(parameter.numel() for parameter in method.parameters())
    return ParameterCount(spec.name, spec.options_text, backbone, built.spec.test_scale, trainable, total)


@lru_cache(maxsize=None)
def _meta_skeleton(backbone: str) -> BuiltSam:
    """`backbone` built once per process on the meta device: copying it is several times cheaper than building it
    again (`cadbench list` counts every method on every backbone), and never changed itself."""
    return build_sam(backbone, device="meta")
