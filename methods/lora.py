"""lora: LoRA on the image encoder as SAMed does it (Zhang & Liu 2023, hitachinsk/SAMed, `sam_lora_image_encoder.py`).

In every image-encoder block, Meta's fused ``qkv`` Linear (dim -> 3 * dim) gets two rank-r branches, each
``Linear(dim, r, bias=False)`` then ``Linear(r, dim, bias=False)``: one is added into the q third of the qkv output,
the other into the v third; k is untouched. As in the reference, A is Kaiming-uniform (a = sqrt(5), PyTorch's own
Linear initialisation) and B is zeros, so at the start the encoder computes exactly what Meta's does; the default
rank is 4; and the two terms are added *in place* into the qkv output tensor. cadbench measures memory, and the
in-place add is part of what the reference's training step allocates, so it stays.

Trainable: the LoRA branches and the mask decoder. SAMed also trains the prompt encoder; the shared protocol freezes
it for every method (docs: methods.md), so it stays frozen here. SAMed's unused ``w_identity`` (a plain tensor
attribute, never registered, never on the GPU) is left out.

Backward runs through every encoder block (the branches sit in all of them), so like SAM Adapter the method is
light in parameters and heavy in activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from segment_anything.modeling import Sam
from torch import nn

from cadbench.methods.base import Method
from cadbench.methods.options import MethodOptions, OptionError, option

DEFAULT_RANK = 4


@dataclass(frozen=True)
class LoraOptions(MethodOptions):
    rank: int = option(DEFAULT_RANK, "rank r of each q and v branch (SAMed's default: 4)")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise OptionError("rank", "must be a positive integer")


class LoraQkv(nn.Module):
    """Meta's fused qkv Linear with SAMed's q and v LoRA branches added in place into its output.

    Input (..., dim), as Meta's `Attention` calls it ((B, H, W, dim), windows included); output (..., 3 * dim).
    """

    def __init__(self, qkv: nn.Linear, rank: int) -> None:
        super().__init__()
        self.qkv = qkv
        self.dim = qkv.in_features
        self.linear_a_q = nn.Linear(self.dim, rank, bias=False)
        self.linear_b_q = nn.Linear(rank, self.dim, bias=False)
        self.linear_a_v = nn.Linear(self.dim, rank, bias=False)
        self.linear_b_v = nn.Linear(rank, self.dim, bias=False)
        for a in (self.linear_a_q, self.linear_a_v):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        for b in (self.linear_b_q, self.linear_b_v):
            nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv[..., : self.dim] += self.linear_b_q(self.linear_a_q(x))
        qkv[..., -self.dim :] += self.linear_b_v(self.linear_a_v(x))
        return qkv


class Lora(Method):
    name = "lora"
    summary = "SAMed's LoRA on q and v of every encoder block (backward through the whole encoder) + mask decoder"
    Options = LoraOptions
    backward_through_encoder = True

    def __init__(self, sam: Sam, options: LoraOptions | None = None) -> None:
        super().__init__(sam, options)
        for block in sam.image_encoder.blocks:
            block.attn.qkv = LoraQkv(block.attn.qkv, self.options.rank)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(self.normalize(images))
