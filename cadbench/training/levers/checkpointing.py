"""Activation checkpointing of the image encoder: every block's activations recomputed in backward, not kept.

Each module in `image_encoder.blocks` is wrapped, in place, by a `CheckpointedBlock` that runs it under
`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)` (PyTorch's recommended, non-reentrant form). So any
code that walks the blocks, Meta's `ImageEncoderViT.forward` or SAM Adapter's own loop, gets it unchanged. Each
block keeps only its input for backward; its inside is recomputed when backward reaches it, which costs one more
forward pass of the encoder (the FLOPs ratio shows it).

Every block's attention is also fused (`FusedAttention`: `scaled_dot_product_attention` with SAM's relative
positions as the additive mask, on CUDA its memory-efficient kernel, trainable through the mask). Without it the
recomputed global attention alone materialises the scores, the biased scores, the softmax and their gradients while
backward runs through the block: 16.6 GB of temporaries for sam_adapter on vit_h at batch 4 (estimated, fp32), more
than checkpointing saved, so the step still did not fit a 24 GB card. Fused, the block holds the mask and its
gradient instead (20.43 GB card needed, estimated). The gradients equal the plain step's to float32 tolerance
(tests).

On LiteMedSAM the blocks are every TinyViT stage's `blocks` (4 MBConv and 10 attention blocks; the family says
which: `ModelFamily.encoder_blocks`); TinyViT's own windowed attention is not fused.

Applies to methods whose backward runs through the encoder (`backward_through_encoder`); where the encoder runs
under `no_grad` there is nothing to recompute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from cadbench.families import family_of
from cadbench.training.levers.base import Lever
from cadbench.training.levers.fused_attention import use_fused_attention


class CheckpointedBlock(nn.Module):
    """A block whose forward runs under non-reentrant activation checkpointing; same inputs and outputs."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, *args, use_reentrant=False)


@dataclass(frozen=True)
class EncoderCheckpointing(Lever):
    field = "checkpointing"

    @classmethod
    def from_cell(cls, cell) -> "EncoderCheckpointing | None":
        return cls() if cell.checkpointing == "encoder" else None

    def apply(self, trainee, plan):
        encoder = trainee.method.sam.image_encoder
        use_fused_attention(encoder)  # Meta's ViT attention only (TinyViT's is left as it is)
        for blocks in family_of(trainee.method.sam).encoder_blocks(encoder):
            for index, block in enumerate(blocks):
                if not isinstance(block, CheckpointedBlock):
                    blocks[index] = CheckpointedBlock(block)
        return plan
