"""The lean frozen encoder: for methods whose image encoder runs under `no_grad` (decoder_only, cad).

Two changes, neither of which changes what the step computes (tests check embeddings, losses and gradients against
the plain step to float32 tolerance):

* order: the frozen encoder runs first, `chunk` images at a time, before any trainable module's forward, so its
  transient memory (attention above all) no longer grows with the batch and no trainable activation is alive while
  it runs. This uses the split every `encoder_under_no_grad` method declares: `frozen_features(images)` (what runs
  under no_grad) and `trainable_embeddings(images, features)` (what trains on top; cad's adapter runs there, after
  the encoder, instead of before it as in the reference code).
* attention: every encoder block's attention computes `scaled_dot_product_attention` with SAM's decomposed
  relative-position term as the additive mask (`FusedAttention`, a subclass of Meta's `Attention`), instead of
  materialising the scores, the biased scores and the softmax one after the other.

Methods that back-propagate through the encoder cannot run it apart: their encoder *is* the trainable part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cadbench.families import features as image_features
from cadbench.training.levers.base import Lever
from cadbench.training.levers.fused_attention import use_fused_attention


class LeanEmbeddings:
    """A method's image embeddings, the frozen part first in chunks: stands in for `method.image_embeddings`."""

    def __init__(self, method, chunk: int) -> None:
        self.method, self.chunk = method, chunk

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = image_features.concat([self.method.frozen_features(part) for part in images.split(self.chunk)])
        return self.method.trainable_embeddings(images, features)


@dataclass(frozen=True)
class LeanFrozenEncoder(Lever):
    field = "lean_encoder"
    chunk: int  # images per encoder forward

    @classmethod
    def from_cell(cls, cell) -> "LeanFrozenEncoder | None":
        return cls(cell.encoder_chunk) if cell.lean_encoder == "on" else None

    def apply(self, trainee, plan):
        method = trainee.method
        use_fused_attention(method.sam.image_encoder)
        method.image_embeddings = LeanEmbeddings(method, self.chunk)  # an instance attribute shadows the method's
        return plan

    def rebatch(self, trainee, plan):
        trainee.method.image_embeddings.chunk = self.chunk
        return plan
