"""Parameter counts of full-size models, taken on the meta device: no memory allocated, no weights initialised."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from cadbench.backbones import BuiltSam, build_sam
from cadbench.registry import parse_method_spec
from cadbench.vocabulary.outcomes import RowPart
from cadbench.vocabulary.resolution import NATIVE_IMAGE_SIZE


@dataclass(frozen=True)
class ParameterCount(RowPart):
    method: str
    method_options: str  # canonical, '' at the method's defaults (see cadbench.vocabulary.cell.Cell)
    backbone: str
    test_scale: bool
    trainable_params: int
    total_params: int
    image_px: int  # the input side the counts are for: resizing the encoder's position tables changes them

    def as_dict(self) -> dict:
        return asdict(self)

    def columns(self) -> dict[str, int]:
        return {"trainable_params": self.trainable_params, "total_params": self.total_params}


@lru_cache(maxsize=None)
def count_parameters(method_spec: str, backbone: str, image_size: int = NATIVE_IMAGE_SIZE) -> ParameterCount:
    """Counts of the method a spec names ('lora:rank=16'), options included, wrapped around `backbone` built for
    images of `image_size` pixels (0: its native size). Kept per process: every batch size, precision and lever
    setting of a method on a backbone has the same counts, and building even on the meta device took 6% of the
    default grid's estimate (measured with py-spy, CPU)."""
    spec = parse_method_spec(method_spec)
    built = _backbone_on_meta(backbone, image_size)
    with torch.device("meta"):
        method = spec.build(copy.deepcopy(built.sam))  # a method changes the model it wraps (adapters, LoRA)
    trainable = sum(parameter.numel() for parameter in method.trainable_parameters())
    total = sum(parameter.numel() for parameter in method.parameters())
    return ParameterCount(spec.name, spec.options_text, backbone, built.spec.test_scale, trainable, total,
                          built.image_size)


@lru_cache(maxsize=None)
def _backbone_on_meta(backbone: str, image_size: int) -> BuiltSam:
    """The backbone built once per process on the meta device; each method's count wraps a copy. A copy of a meta
    model takes a fraction of a build: SAM 2.1's Hydra configs took 0.36-0.48 s a build and 0.06-0.10 s a copy, so
    `cadbench list` built every method x SAM 2.1 size anew for most of its time (measured, CPU)."""
    return build_sam(backbone, device="meta", image_size=image_size)
