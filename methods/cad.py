"""cad: the Convolutional Adapter (Kim et al. 2024, arXiv 2409.15889).

A small convolutional network runs beside the frozen image encoder. The encoder runs under `no_grad`, so it stores
no activations for backward; only the adapter and the mask decoder train. Faithful to the authors' code
(Kyyle2114/Convolutional-Adapter-for-Segment-Anything, `modeling/cad.py` and `modeling/sam.py`):

* input: the raw image at half the encoder resolution, concatenated with its FFT high-pass image (6 channels), each
  channel divided by its own maximum (+1e-5);
* a 1x1 conv to the embedding width, then three residual blocks (3x3 conv, dilation 2, same padding -> BatchNorm ->
  LeakyReLU(0.1) -> + input -> 2x2 average pool), halving the resolution each time;
* each block's output is adaptively average-pooled to the embedding grid, the three are summed, then `tanh`;
* the decoder sees ``embedding + 0.1 * adapter_output``.

The reference resizes dataset images to 512 px and upsamples them to 1024 px for the encoder; here the harness feeds
the encoder resolution and the adapter takes it down by a 2x2 average. For this exact factor that equals bilinear
resizing *without antialiasing* (`F.interpolate(..., antialias=False)`, OpenCV's INTER_LINEAR); an antialiased
resize (PIL's, torchvision's with ``antialias=True``) filters over four pixels per axis and gives a different image
(up to 60 grey levels apart on noise). Under the cad-paper protocol, which squashes to 512 px and upsamples
bilinearly to 1024 px as the reference does, the adapter therefore sees a slightly blurred 512 px image (on a
synthetic scene: 1.3 grey levels mean absolute difference, 16.5 at most); docs/protocols.md lists this.

On SAM 2.1 the method is cadbench's own extension of CAD (the paper and its code are on SAM): the same adapter, on the
same 6-channel half-resolution input, pooled to the grid of SAM 2's stride-16 FPN level (64 x 64 x 256 at 1024 px),
and ``0.1 * adapter_output`` is added to that level, which SAM 2's decoder reads as its image embeddings (before it
adds `no_mem_embed`). The two finer levels, which the decoder reads through its own `conv_s0` and `conv_s1`, get
nothing from the adapter. Hiera and the neck run under `no_grad`, as SAM's encoder does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from cadbench.families import LITEMEDSAM, SAM, SAM2
from cadbench.families.features import Features, add_to_embeddings
from cadbench.methods.base import Method
from cadbench.methods.frequency import high_pass

ADAPTER_SCALE = 0.1


class ConvBlock(nn.Module):
    """3x3 dilated conv -> BatchNorm -> LeakyReLU(0.1), plus the block input, then a 2x2 average pool."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, dilation=2, padding="same")
        self.norm = nn.BatchNorm2d(channels)
        self.activation = nn.LeakyReLU(0.1)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(self.norm(self.conv(x))) + x)


class ConvAdapter(nn.Module):
    """6-channel half-resolution input -> (B, channels, grid, grid) in [-1, 1]."""

    def __init__(self, channels: int, grid: int, in_channels: int = 6, blocks: int = 3) -> None:
        super().__init__()
        self.lift = nn.Conv2d(in_channels, channels, kernel_size=1)
        self.blocks = nn.ModuleList(ConvBlock(channels) for _ in range(blocks))
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / (torch.amax(x, dim=(2, 3), keepdim=True) + 1e-5)
        x = self.lift(x)
        pooled = []
        for block in self.blocks:
            x = block(x)
            pooled.append(F.adaptive_avg_pool2d(x, self.grid))
        return torch.tanh(sum(pooled))


class CAD(Method):
    name = "cad"
    summary = "convolutional adapter beside the encoder (under no_grad) + mask decoder"
    encoder_under_no_grad = True
    families = (SAM, LITEMEDSAM, SAM2)
    own_definition_on = {SAM2: "cadbench's own extension of CAD (the paper's is on SAM): the adapter's output is "
                               "added to the stride-16 FPN level that SAM 2's decoder reads as image embeddings; the "
                               "finer levels get nothing"}

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam)
        # The grid and width of the embeddings the decoder reads (SAM: 64 x 64 x 256 at 1024 px; LiteMedSAM: 64 x 64
        # x 256 at 256 px, where the adapter's coarser two blocks, 32 and 16 px, are brought up to the grid; SAM 2:
        # its stride-16 level, 64 x 64 x 256 at 1024 px).
        grid = sam.prompt_encoder.image_embedding_size[0]
        channels = sam.prompt_encoder.embed_dim
        self.adapter = ConvAdapter(channels=channels, grid=grid)

    def adapter_input(self, images: torch.Tensor) -> torch.Tensor:
        """Raw image at half resolution with its high-pass image: (B, 6, S/2, S/2)."""
        half = F.avg_pool2d(images, kernel_size=2)
        return torch.cat([half, high_pass(half).to(half.dtype)], dim=1)

    def image_embeddings(self, images: torch.Tensor) -> Features:
        # Same order as the reference: the adapter first, so its saved activations are live while the encoder runs.
        adapter_output = self.adapter(self.adapter_input(images))
        with torch.no_grad():
            features = self.frozen_features(images)
        return add_to_embeddings(features, ADAPTER_SCALE * adapter_output)

    def trainable_embeddings(self, images: torch.Tensor, features: Features) -> Features:
        """The adapter on top of the encoder's features (the lean encoder's order: encoder first)."""
        return add_to_embeddings(features, ADAPTER_SCALE * self.adapter(self.adapter_input(images)))
