"""full: full fine-tuning, the memory upper bound the adapters are compared against.

Every parameter of the image encoder and of the mask decoder trains; the prompt encoder stays frozen, as in every
method of the shared protocol (docs: methods.md). The step keeps the encoder's weights, their gradients and AdamW's
two states (about 640 M parameters on vit_h), plus every activation of the encoder for backward.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam

from cadbench.families import LITEMEDSAM, SAM, SAM2
from cadbench.families.features import Features
from cadbench.methods.base import Method


class Full(Method):
    name = "full"
    summary = "image encoder + mask decoder all trainable (the memory upper bound)"
    backward_through_encoder = True
    families = (SAM, LITEMEDSAM, SAM2)

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam)
        sam.image_encoder.requires_grad_(True)

    def image_embeddings(self, images: torch.Tensor) -> Features:
        return self.sam.image_encoder(self.normalize(images))
