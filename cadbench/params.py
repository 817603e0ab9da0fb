"""Parameter counts of full-size models, taken on the meta device: no memory allocated, no weights initialised."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cadbench.backbones import build_sam
from cadbench.registry import build_method


@dataclass(frozen=True)
class ParameterCount:
    method: str
    backbone: str
    test_scale: bool
    trainable_params: int
    total_params: int

    def as_dict(self) -> dict:
        return asdict(self)


def count_parameters(method_name: str, backbone: str) -> ParameterCount:
    built = build_sam(backbone, device="meta")
    with torch.device("meta"):
        method = build_method(method_name, built.sam)
    trainable = sum(parameter.numel() for parameter in method.trainable_parameters())
    total = sum(parameter.numel() for parameter in method.parameters())
    return ParameterCount(method_name, backbone, built.spec.test_scale, trainable, total)
