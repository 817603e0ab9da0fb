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
"""

from __future__ import annotations

import math

import torch
from segment_anything.modeling import ImageEncoderViT, Sam
from torch import nn

from cadbench.families import LITEMEDSAM, SAM2
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
    undefined_on = {LITEMEDSAM: (
        "SAM Adapter is defined on a plain ViT (one token grid, one width, prompts added before each of its blocks "
        "from a patch-16 handcrafted feature); TinyViT's four stages change resolution and width (64 to 320) and "
        "its first stage is convolutional, so where its prompts enter and at which width has no faithful answer"),
        SAM2: "not yet defined on SAM 2.1 in cadbench (SAM2-Adapter, from the SAM2-Adapter branch of "
              "tianrun-chen/SAM-Adapter-PyTorch, is planned in issue 24)"}

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam)
        encoder: ImageEncoderViT = sam.image_encoder
        self.prompt_generator = PromptGenerator(
            embed_dim=encoder.patch_embed.proj.out_channels,
            depth=len(encoder.blocks),
            patch_size=encoder.patch_embed.proj.stride[0],
        )

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        encoder = self.sam.image_encoder
        normalized = self.normalize(images)
        x = encoder.patch_embed(normalized)
        prompts = self.prompt_generator(normalized, x)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
        for prompt, block in zip(prompts, encoder.blocks):
            x = block(x + prompt)
        return encoder.neck(x.permute(0, 3, 1, 2))
