"""zero_shot: the pretrained model as built, no training: the score every fine-tuning method is compared against.

Nothing trains, so the row's quality is the backbone's own with the run's prompts and evaluation, and its memory and
throughput are those of an inference step (the forward under no_grad: no gradients, no optimizer states, no
activations kept for backward). With random weights the score means nothing, and the row says so.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam

from cadbench.families import LITEMEDSAM, SAM, SAM2
from cadbench.families.features import Features
from cadbench.methods.base import Method


class ZeroShot(Method):
    name = "zero_shot"
    summary = "the pretrained model, no training (memory and throughput of inference)"
    trains = False
    is_backbone_as_built = True
    encoder_under_no_grad = True
    families = (SAM, LITEMEDSAM, SAM2)

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam)
        sam.requires_grad_(False)  # the mask decoder too: nothing trains

    def image_embeddings(self, images: torch.Tensor) -> Features:
        with torch.no_grad():
            return self.frozen_features(images)
