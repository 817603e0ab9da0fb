"""Model families: what differs between SAM-like models below the methods and levers.

A backbone (`cadbench.backbones.BackboneSpec`) names its family. Every family's model is a Meta `Sam` object with
the three parts every method uses, `image_encoder`, `prompt_encoder` and `mask_decoder`, and its own `preprocess`
(raw pixels to the encoder's input). What a method or a lever must know beyond that, it asks the family
(`family_of(sam)`), never `isinstance` of a module:

* `encoder_blocks(encoder)`: the `ModuleList`s holding the encoder's blocks, in order (activation checkpointing wraps
  each block; SAM: `encoder.blocks`; TinyViT: each stage's `blocks`; Hiera: `encoder.trunk.blocks`).
* `decode`: how image features and box prompts become mask logits, where it is not SAM's (`None`: Meta's
  segment-anything `MaskDecoder` on one embedding, `cadbench.methods.decoding`; SAM 2: the model's own
  `decode_masks`, which reads its three FPN levels).

Image features are what a family's `image_encoder` returns: one tensor (B, C, g, g) for SAM and LiteMedSAM, a tuple
of tensors with the batch first for SAM 2 (its FPN levels); `cadbench.families.features` batches and slices either.

A method says on which families it is defined (`Method.families`) and, for the others, why not
(`Method.not_defined_on`): such a cell is a `not_applicable` row with that reason, decided where levers that cannot
apply are (`cadbench.training.levers.not_applicable`).

    FAMILIES              name -> ModelFamily ("sam", "litemedsam", "sam2")
    family_of(sam)        the family of a built model (a model that does not say is Meta's SAM)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor, nn

SAM = "sam"
LITEMEDSAM = "litemedsam"
SAM2 = "sam2"


@dataclass(frozen=True)
class ModelFamily:
    name: str  # "sam", "litemedsam", "sam2" (a backbone's `family`, a method's `families`)
    label: str  # for people: "SAM (ViT)", "LiteMedSAM (TinyViT)"
    encoder_blocks: Callable[[nn.Module], list[nn.ModuleList]]  # the encoder's blocks, stage by stage
    # (model, image features, boxes) -> low-resolution mask logits, where decoding is not SAM's (see the docstring)
    decode: Callable[[nn.Module, Any, Tensor], Tensor] | None = None


def _vit_blocks(encoder: nn.Module) -> list[nn.ModuleList]:
    return [encoder.blocks]


def _tinyvit_blocks(encoder: nn.Module) -> list[nn.ModuleList]:
    return [stage.blocks for stage in encoder.layers]


def _hiera_blocks(encoder: nn.Module) -> list[nn.ModuleList]:
    return [encoder.trunk.blocks]


def _decoded_by_the_model(model: nn.Module, features: Any, boxes: Tensor) -> Tensor:
    return model.decode_masks(features, boxes)


FAMILIES: dict[str, ModelFamily] = {
    SAM: ModelFamily(SAM, "SAM (ViT image encoder)", _vit_blocks),
    LITEMEDSAM: ModelFamily(LITEMEDSAM, "LiteMedSAM (TinyViT image encoder)", _tinyvit_blocks),
    SAM2: ModelFamily(SAM2, "SAM 2.1 (Hiera image encoder)", _hiera_blocks, decode=_decoded_by_the_model),
}


def family_of(sam: nn.Module) -> ModelFamily:
    """The family of a built model: its class's `family` name; Meta's own `Sam` (which names none) is SAM."""
    return FAMILIES[getattr(sam, "family", SAM)]


__all__ = ["FAMILIES", "LITEMEDSAM", "SAM", "SAM2", "ModelFamily", "family_of"]
