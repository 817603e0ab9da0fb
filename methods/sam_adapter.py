"""sam_adapter: SAM Adapter (Chen et al. 2023, "SAM Fails to Segment Anything?").

Adapters enter the frozen image encoder before every ViT block, so backward runs through all of them and every
block's activations are kept. Faithful to the authors' code (tianrun-chen/SAM-Adapter-PyTorch,
`models/mmseg/models/sam/image_encoder.py`, `PromptGenerator`), with ``r = embed_dim // 32``:

* handcrafted feature: the FFT high-pass of the normalised input image (ratio 0.25), patch-embedded by a
  16x16/16 conv from 3 to r channels;
* embedding tune: ``Linear(embed_dim, r)`` on the patch embeddings, before the position embedding is added. This
  fixes a bug of the reference: its `PromptGenerator.init_embeddings` (image_encoder.py, lines 263-266 at commit
  665145d) calls ``x.reshape(N, C, H*W).permute(0, 2, 1)`` on the NHWC output of `PatchEmbed`, which reinterprets
  the token-major memory as channel-major, so each "token" it feeds the Linear mixes channels of different tokens.
  Here each token's own embedding goes in (``reshape(B, H*W, C)``); the module and its parameter count are
  unchanged;
* per block i: ``Linear(r, r) + GELU`` on (handcrafted + embedding feature), then one shared ``Linear(r, embed_dim)``;
  the result is added to the token map right before block i. All `depth` prompts are computed before the first
  block, as in the reference.

The encoder's own modules are Meta's (`patch_embed`, `pos_embed`, `blocks`, `neck`), called in the order of
`ImageEncoderViT.forward`; only the prompt injection is new.

On SAM 2.1 it is SAM2-Adapter (Chen et al. 2024), as the SAM2-Adapter branch of the same repository builds it
(`models/sam2/modeling/backbones/hieradet.py`, `PromptGenerator` and `Hiera.forward`, at commit db7ee31): the same
generator once per Hiera stage k, of width C_k, with ``r_k = C_k // 32`` (at least 1, which only the test-scale
Hiera's 8-wide stages need):

* handcrafted features: the same FFT high-pass of the normalised image, then a chain of overlapping patch
  embeddings (conv with padding k // 2, then LayerNorm): 7x7 stride 4 from 3 to r_1 channels, then 3x3 stride 2 from
  r_(k-1) to r_k, so that stage k's map has that stage's grid. All four are computed before the first block;
* Hiera's blocks are grouped by the grid of their input: the first block of every later stage pools its queries,
  so it still reads the previous stage's map (hiera_l, stages 2/6/36/4: blocks 0-2, 3-8, 9-44, 45-47). At a group's
  start, ``Linear(C_k, r_k)`` of the token map (for the first group, after Hiera adds its position embedding);
  before each block of the group, the handcrafted map plus that, through the block's own ``Linear(r_k, r_k) + GELU``
  and the group's shared ``Linear(r_k, C_k)``, added to the token map;
* the reference makes (blocks in stage k) + 1 of those per-block MLPs for stage k, while its groups are one block
  longer in the first stage and one shorter in the last, so (hiera_l) 1 + 1 + 2 of them never run. They are made
  here too, trainable as in the reference, so the trainable count is the reference's: 140,650 on hiera_l, counted
  on the reference's own `PromptGenerator` built at its defaults. They get no gradient, so AdamW keeps no state
  for them.

Hiera, its position embedding and the FPN neck are Meta's, called in the order of `Hiera.forward` and
`ImageEncoder.forward`. Not taken from the reference: its own copy of Hiera, which hard-codes hiera_l and also
builds four patch embeddings (`patch_embed1`-`4`, 7,865,856 frozen parameters on hiera_l) that its forward never
calls; and its prompt-free decoding (no box, `multimask_output=True`): the harness prompts every method alike. The
reference trains everything outside the image encoder; here, as for every method, that is SAM 2.1's mask decoder.
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling import ImageEncoderViT, Sam
from torch import nn

from cadbench.families import LITEMEDSAM, SAM, SAM2
from cadbench.families.features import Features
from cadbench.methods.base import Method
from cadbench.methods.frequency import high_pass

SCALE_FACTOR = 32


class PromptGenerator(nn.Module):
    """Produces one (B, g, g, embed_dim) prompt per encoder block."""

    def __init__(self, embed_dim: int, depth: int, patch_size: int) -> None:
        super().__init__()
        rank = embed_dim // SCALE_FACTOR
        self.handcrafted_embed = nn.Conv2d(3, rank, kernel_size=patch_size, stride=patch_size)
        self.embedding_tune = nn.Linear(embed_dim, rank)
        self.lightweight_mlps = nn.ModuleList(nn.Sequential(nn.Linear(rank, rank), nn.GELU()) for _ in range(depth))
        self.shared_up = nn.Linear(rank, embed_dim)
        self.apply(_reference_init)

    def forward(self, normalized_images: torch.Tensor, patch_embeddings: torch.Tensor) -> list[torch.Tensor]:
        batch, grid_h, grid_w, _ = patch_embeddings.shape
        handcrafted = self.handcrafted_embed(high_pass(normalized_images).to(normalized_images.dtype))
        handcrafted = handcrafted.flatten(2).transpose(1, 2)  # (B, g*g, r)
        embedding = self.embedding_tune(patch_embeddings.reshape(batch, grid_h * grid_w, -1))
        combined = handcrafted + embedding
        return [self.shared_up(mlp(combined)).reshape(batch, grid_h, grid_w, -1) for mlp in self.lightweight_mlps]

    def image_embeddings(self, encoder: ImageEncoderViT, normalized_images: torch.Tensor) -> torch.Tensor:
        """Meta's `ImageEncoderViT.forward` with a prompt added before each block."""
        x = encoder.patch_embed(normalized_images)
        prompts = self(normalized_images, x)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        for prompt, block in zip(prompts, encoder.blocks):
            x = block(x + prompt)
        return encoder.neck(x.permute(0, 3, 1, 2))


class OverlapPatchEmbed(nn.Module):
    """A conv with padding kernel // 2, flattened to tokens, then LayerNorm: (B, C, H, W) -> (B, H', W', C')."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1))


class HieraPromptGenerator(nn.Module):
    """SAM2-Adapter's prompts for Meta's Hiera trunk, one set per stage (see the module's docstring); `run` is
    `Hiera.forward` with the prompts added before each block."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        ends = list(trunk.stage_ends)
        widths = [trunk.blocks[end].dim_out for end in ends]
        ranks = [max(1, width // SCALE_FACTOR) for width in widths]
        stages = [end - start for start, end in zip([-1] + ends, ends)]
        # the group of block i is the stage of its input: that of block i - 1 (block 0 reads the patch embeddings)
        self.groups = [0] + [sum(end < i - 1 for end in ends) for i in range(1, len(trunk.blocks))]
        self.handcrafted = nn.ModuleList(
            OverlapPatchEmbed(ranks[k - 1] if k else 3, ranks[k], kernel=3 if k else 7, stride=2 if k else 4)
            for k in range(len(ranks)))
        self.embedding_tune = nn.ModuleList(nn.Linear(width, rank) for width, rank in zip(widths, ranks))
        self.lightweight_mlps = nn.ModuleList(
            nn.ModuleList(nn.Sequential(nn.Linear(rank, rank), nn.GELU()) for _ in range(blocks + 1))
            for blocks, rank in zip(stages, ranks))
        self.shared_up = nn.ModuleList(nn.Linear(rank, width) for width, rank in zip(widths, ranks))
        self.apply(_reference_init)

    def handcrafted_maps(self, normalized_images: torch.Tensor) -> list[torch.Tensor]:
        """(B, H_k, W_k, r_k) for each stage k, from the high-pass image."""
        first, *later = self.handcrafted
        maps = [first(high_pass(normalized_images).to(normalized_images.dtype))]
        for embed in later:  # each from the one before, channels first again (as the reference reshapes it)
            maps.append(embed(maps[-1].permute(0, 3, 1, 2).contiguous()))
        return maps

    def image_embeddings(self, encoder: nn.Module, normalized_images: torch.Tensor) -> Features:
        """Meta's `ImageEncoder.forward` (its FPN levels, as the family's encoder returns them) on the prompted
        trunk."""
        return encoder.fpn_levels(self.run(encoder.trunk, normalized_images))

    def run(self, trunk: nn.Module, normalized_images: torch.Tensor) -> list[torch.Tensor]:
        """Hiera's stage outputs (B, C_k, H_k, W_k), as `Hiera.forward` returns them, with the prompts added."""
        x = trunk.patch_embed(normalized_images)
        handcrafted = self.handcrafted_maps(normalized_images)
        x = x + trunk._get_pos_embed(x.shape[1:3])
        outputs, group, first = [], None, 0
        for index, block in enumerate(trunk.blocks):
            if self.groups[index] != group:
                group, first = self.groups[index], index
                embedding = self.embedding_tune[group](x)
            prompt = handcrafted[group] + embedding
            prompt = self.shared_up[group](self.lightweight_mlps[group][index - first](prompt))
            x = block(x + prompt)
            if index == trunk.stage_ends[-1] or (index in trunk.stage_ends and trunk.return_interm_layers):
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


def _reference_init(module: nn.Module) -> None:
    """The reference's initialisation: truncated normal (std 0.02) linears, He-normal (fan-out) convs, zero biases."""
    if isinstance(module, nn.Linear):
        _truncated_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        nn.init.zeros_(module.bias)


@torch.no_grad()
def _truncated_normal_(tensor: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """N(0, std^2) truncated to [-bound, bound] by inverse-CDF sampling, as the reference code initialises.

    Unlike `nn.init.trunc_normal_` in recent PyTorch (rejection sampling, which reads tensor values), this never
    looks at the data, so methods can be built on the meta device and under fake tensors.
    """
    cdf = lambda value: (1.0 + math.erf(value / math.sqrt(2.0))) / 2.0  # noqa: E731
    low, high = cdf(-bound / std), cdf(bound / std)
    tensor.uniform_(2 * low - 1, 2 * high - 1).erfinv_().mul_(std * math.sqrt(2.0))
    return tensor.clamp_(-bound, bound)


class SamAdapter(Method):
    name = "sam_adapter"
    summary = "adapters before every encoder block (backward through the whole encoder) + mask decoder"
    backward_through_encoder = True
    families = (SAM, SAM2)
    undefined_on = {LITEMEDSAM: (
        "SAM Adapter is defined on a plain ViT (one token grid, one width, prompts added before each of its blocks "
        "from a patch-16 handcrafted feature); TinyViT's four stages change resolution and width (64 to 320) and "
        "its first stage is convolutional, so where its prompts enter and at which width has no faithful answer")}

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam)
        if self.family.name == SAM2:
            self.prompt_generator = HieraPromptGenerator(sam.image_encoder.trunk)
            return
        encoder: ImageEncoderViT = sam.image_encoder
        self.prompt_generator = PromptGenerator(
            embed_dim=encoder.patch_embed.proj.out_channels,
            depth=len(encoder.blocks),
            patch_size=encoder.patch_embed.proj.stride[0],
        )

    def image_embeddings(self, images: torch.Tensor) -> Features:
        return self.prompt_generator.image_embeddings(self.sam.image_encoder, self.normalize(images))
