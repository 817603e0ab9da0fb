"""Parameter counts of full-size models, taken on the meta device: no memory allocated, no weights initialised."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from cadbench.backbones import build_sam
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
    built = build_sam(backbone, device="meta", image_size=image_size)
    with torch.device("meta"):
        method = spec.build(built.sam)
    trainable = sum(parameter.numel() for parameter in method.trainable_parameters())
    total = sum(parameter.numel() for parameter in method.parameters())
    return ParameterCount(spec.name, spec.options_text, backbone, built.spec.test_scale, trainable, total,
                          built.image_size)
