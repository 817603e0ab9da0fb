"""SAM's image-encoder attention through `scaled_dot_product_attention`, relative positions as the additive mask.

Meta's `Attention.forward` materialises the scores (q k^T, scaled), adds the decomposed relative-position term
(`add_decomposed_rel_pos`: a new tensor), applies softmax (another), then multiplies by v: for a global-attention
block of vit_h that is B x 16 heads x 4096^2 floats several times over. `FusedAttention` is a subclass of Meta's
`Attention` (same parameters, same `qkv` and `proj`) whose forward builds only the relative-position term, once, as
the mask (Meta's `get_rel_pos` and the same einsums as `add_decomposed_rel_pos`), and hands q, k, v and the mask to
`torch.nn.functional.scaled_dot_product_attention`, which computes softmax(q k^T * scale + mask) v without keeping
the scores.

Used by the lean encoder (under no_grad) and by the checkpointed encoder (with gradients, through the mask to the
relative-position tables too). On CUDA it asks for the memory-efficient kernel (`SDPBackend.EFFICIENT_ATTENTION`,
the fused kernel that takes an arbitrary additive mask; flash attention takes none): it allocates the output (and,
when gradients are needed, the log-sum-exp per query; in backward the gradients of q, k, v and the mask), nothing
quadratic beyond the mask and its gradient. That is what the estimator models (`cadbench.estimator.cuda_sdpa`). On
the CPU PyTorch picks its own kernel. The result equals Meta's to float32
tolerance (the sum is grouped differently: scores + (rel_h + rel_w) instead of (scores + rel_h) + rel_w).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn


class FusedAttention(Attention):
    """Meta's `Attention` computed by `scaled_dot_product_attention` (see the module docstring); input and output
    (B, H, W, dim) as Meta's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        tokens = height * width
        # (3, B * heads, H * W, head_dim), as in Meta's forward
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, tokens, -1).unbind(0)
        mask = None
        if self.use_rel_pos:
            mask = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, (height, width), (height, width))
            mask = mask.view(batch, self.num_heads, tokens, tokens)
        q, k, v = (t.view(batch, self.num_heads, tokens, -1) for t in (q, k, v))  # the fused kernels take 4-D
        with _memory_efficient_kernel(x.device):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, height, width, -1))


def relative_position_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           q_size: tuple[int, int], k_size: tuple[int, int]) -> torch.Tensor:
    """SAM's decomposed relative-position term alone, (B, q_h * q_w, k_h * k_w) for q (B, q_h * q_w, C): what
    Meta's `add_decomposed_rel_pos` adds to the scores, built in one allocation."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    rel_h_table = get_rel_pos(q_h, k_h, rel_pos_h)
    rel_w_table = get_rel_pos(q_w, k_w, rel_pos_w)
    batch, _, dim = q.shape
    r_q = q.reshape(batch, q_h, q_w, dim)
    # contiguous (small copies), so that the broadcast sum below is laid out as (B, q_h, q_w, k_h, k_w) and its
    # view needs no copy (einsum may return the batch dimension innermost)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h_table).contiguous()
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w_table).contiguous()
    return (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(batch, q_h * q_w, k_h * k_w)


def _memory_efficient_kernel(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)


def use_fused_attention(encoder: nn.Module) -> None:
    """Make every block's attention in `encoder` a `FusedAttention`, in place: same module, same parameters (the
    class is swapped, as torch.nn.utils.parametrize does for its own modules)."""
    for module in encoder.modules():
        if type(module) is Attention:
            module.__class__ = FusedAttention
