"""The FFT high-pass image both adapters feed on (SAM Adapter's handcrafted feature, CAD's extra channels)."""

from __future__ import annotations

import math

import torch

HIGH_PASS_RATIO = 0.25  # area ratio of the centred low-frequency square that is removed


def high_pass(images: torch.Tensor, ratio: float = HIGH_PASS_RATIO) -> torch.Tensor:
    """|IFFT(high-pass(FFT(x)))| per channel, for images (B, C, H, W).

    The spectrum is centred with `fftshift`; a centred square of half-side ``int(sqrt(H*W*ratio) // 2)`` (256 for
    1024 x 1024 and ratio 0.25) is zeroed; the result is shifted back, inverted, and the absolute value of its real
    part returned. Computed in float32 whatever the autocast state (FFTs have no bf16 kernels).
    """
    height, width = images.shape[-2:]
    half_side = int(math.sqrt(height * width * ratio) // 2)
    keep = torch.ones(height, width, device=images.device)
    keep[height // 2 - half_side : height // 2 + half_side, width // 2 - half_side : width // 2 + half_side] = 0
    spectrum = torch.fft.fftshift(torch.fft.fft2(images.float(), norm="forward"), dim=(-2, -1))
    spectrum = torch.fft.ifftshift(spectrum * keep, dim=(-2, -1))
    return torch.fft.ifft2(spectrum, norm="forward").real.abs()
