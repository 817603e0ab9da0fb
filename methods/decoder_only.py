"""decoder_only: fine-tune SAM's mask decoder alone — the memory floor the adapters are compared against."""

from __future__ import annotations

import torch

from cadbench.families import LITEMEDSAM, SAM, SAM2
from cadbench.families.features import Features
from cadbench.methods.base import Method


class DecoderOnly(Method):
    name = "decoder_only"
    summary = "mask decoder only; image encoder frozen under no_grad"
    encoder_under_no_grad = True
    families = (SAM, LITEMEDSAM, SAM2)

    def image_embeddings(self, images: torch.Tensor) -> Features:
        with torch.no_grad():
            return self.frozen_features(images)  # the embeddings themselves: nothing trains on top
