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

On SAM 2.1 (Hiera) the branches go on the fused ``qkv`` Linear of every Hiera block's `MultiScaleAttention`, the
same construction as on SAM's ViT: Hiera's qkv output is q, k and v one after another (`forward` reshapes it to
(B, H * W, 3, heads, C)), each ``dim_out`` wide, where ``dim_out`` is the block's output width (twice its input width
in the first block of stages 2-4, where the stage widens). So A is ``Linear(dim, r)`` and B ``Linear(r, dim_out)``,
added in place into the q third and the v third; k is untouched. Same ranks, same initialisation. The branches sit in
every block of the trunk; the FPN neck has no attention and stays frozen.

On LiteMedSAM (TinyViT) the branches go on the ``qkv`` Linear of every attention block (stages 2-4, 10 blocks; the
first stage is convolutional and has no attention). TinyViT's fused ``qkv`` is laid out head by head: each head's
slice is ``[q (key_dim) | k (key_dim) | v (4 * key_dim)]`` (`Attention.forward` views it as (B, N, heads, -1) and
splits it), so the q branch ends in ``heads * key_dim`` outputs added into each head's q slice and the v branch in
``heads * 4 * key_dim`` outputs added into each head's v slice, in place as on SAM; k is untouched. Same ranks, same
initialisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from segment_anything.modeling import Sam
from torch import nn

from cadbench.families import LITEMEDSAM, SAM, SAM2
from cadbench.methods.base import Method
from cadbench.methods.options import MethodOptions, OptionError, option

DEFAULT_RANK = 4


@dataclass(frozen=True)
class LoraOptions(MethodOptions):
    rank: int = option(DEFAULT_RANK, "rank r of each q and v branch (SAMed's default: 4)")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise OptionError("rank", "must be a positive integer")


def add_lora_branches(module: nn.Module, dim: int, rank: int, q_out: int, v_out: int) -> None:
    """SAMed's q and v branches on `module`: `linear_a_q`/`linear_a_v` (dim -> rank, Kaiming-uniform, as nn.Linear)
    and `linear_b_q`/`linear_b_v` (rank -> q_out / v_out, zeros, so that training starts from the frozen model)."""
    module.linear_a_q = nn.Linear(dim, rank, bias=False)
    module.linear_b_q = nn.Linear(rank, q_out, bias=False)
    module.linear_a_v = nn.Linear(dim, rank, bias=False)
    module.linear_b_v = nn.Linear(rank, v_out, bias=False)
    for a in (module.linear_a_q, module.linear_a_v):
        nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
    for b in (module.linear_b_q, module.linear_b_v):
        nn.init.zeros_(b.weight)


class LoraQkv(nn.Module):
    """Meta's fused qkv Linear with SAMed's q and v LoRA branches added in place into its output.

    Input (..., dim), as Meta's `Attention` (SAM) and `MultiScaleAttention` (SAM 2's Hiera) call it ((B, H, W, dim),
    windows included); output (..., 3 * out): q, k and v one after another, each `out` wide (`out` is `dim` on SAM's
    ViT, the block's output width on Hiera).
    """

    def __init__(self, qkv: nn.Linear, rank: int) -> None:
        super().__init__()
        if qkv.out_features % 3:
            raise ValueError(f"a fused qkv Linear has 3 equal parts, got {qkv.out_features} outputs")
        self.qkv = qkv
        self.out = qkv.out_features // 3
        add_lora_branches(self, qkv.in_features, rank, q_out=self.out, v_out=self.out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv[..., : self.out] += self.linear_b_q(self.linear_a_q(x))
        qkv[..., -self.out :] += self.linear_b_v(self.linear_a_v(x))
        return qkv


class TinyVitLoraQkv(nn.Module):
    """TinyViT's fused qkv Linear with q and v LoRA branches added in place into each head's q and v slices.

    Input (B, N, dim); output (B, N, heads * (2 * key_dim + value_dim)), laid out head by head as TinyViT reads it."""

    def __init__(self, qkv: nn.Linear, rank: int, num_heads: int, key_dim: int, value_dim: int) -> None:
        super().__init__()
        self.qkv = qkv
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        dim = qkv.in_features
        add_lora_branches(self, dim, rank, q_out=num_heads * key_dim, v_out=num_heads * value_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        lead = qkv.shape[:-1]
        per_head = qkv.view(*lead, self.num_heads, -1)
        per_head[..., : self.key_dim] += self.linear_b_q(self.linear_a_q(x)).view(*lead, self.num_heads, -1)
        per_head[..., -self.value_dim :] += self.linear_b_v(self.linear_a_v(x)).view(*lead, self.num_heads, -1)
        return qkv


def _lora_on_fused_qkv(stages: list[nn.ModuleList], rank: int) -> None:
    """SAM's ViT and SAM 2's Hiera: every block's `attn.qkv` gives q, k and v one after another."""
    for blocks in stages:
        for block in blocks:
            block.attn.qkv = LoraQkv(block.attn.qkv, rank)


def _lora_on_tinyvit(stages: list[nn.ModuleList], rank: int) -> None:
    for blocks in stages[1:]:  # stage 1 is MBConv blocks, without attention
        for block in blocks:
            attn = block.attn
            attn.qkv = TinyVitLoraQkv(attn.qkv, rank, attn.num_heads, attn.key_dim, attn.d)


class Lora(Method):
    name = "lora"
    summary = "SAMed's LoRA on q and v of every encoder block (backward through the whole encoder) + mask decoder"
    Options = LoraOptions
    backward_through_encoder = True
    families = (SAM, LITEMEDSAM, SAM2)
    # how the branches go into the blocks the family lists (`ModelFamily.encoder_blocks`), per family
    _ON_FAMILY = {SAM: _lora_on_fused_qkv, LITEMEDSAM: _lora_on_tinyvit, SAM2: _lora_on_fused_qkv}

    def __init__(self, sam: Sam, options: LoraOptions | None = None) -> None:
        super().__init__(sam, options)
        self._ON_FAMILY[self.family.name](self.family.encoder_blocks(sam.image_encoder), self.options.rank)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(self.normalize(images))
