"""CUDA's memory-efficient attention kernel, modelled for the replay: what `scaled_dot_product_attention` allocates
on a GPU, applied to CPU (and fake CPU) tensors.

Why: the replay runs on fake CPU tensors (see cuda_autocast for why not fake CUDA ones), and on CPU tensors PyTorch
dispatches `scaled_dot_product_attention` to its CPU kernels, which allocate differently from CUDA's. The lean
encoder's attention (`cadbench.training.levers.fused_attention`) asks CUDA for the memory-efficient kernel; what
that path allocates is, from `scaled_dot_product_attention` in aten/src/ATen/native/transformers/attention.cpp
(its `efficient_attention` case) and the kernel's meta function (torch/_meta_registrations.py,
`meta__scaled_dot_product_efficient_attention`):

* a boolean mask converted to an additive one of the query's dtype (`convert_boolean_attn_mask`);
* the mask expanded to (B, heads, L, S), padded to a last dimension that is a multiple of 16 when it is not
  (`preprocess_mask`, `pad_bias`: a new tensor, then a slice of it), or made contiguous when its strides are not
  multiples of 16;
* the output, (B, L, heads, Kv) in memory (returned as its (B, heads, L, Kv) transpose);
* the log-sum-exp per query, float32 (B, heads, ceil(L / 32) * 32), only when a gradient will be needed (an input
  requires grad and grad mode is on); the philox seed and offset live on the host.
* in backward (`_scaled_dot_product_efficient_attention_backward`'s meta function): the gradients of q, k and v,
  each (B, L, heads, K) in memory, and, when the mask requires grad (the checkpointed encoder's relative
  positions), the mask's gradient with its last dimension padded to a multiple of 16 (then sliced).

Nothing quadratic beyond the mask (and its gradient): no scores, no softmax. Not modelled: the kernel's
output-accumulator buffer (`kNeedsOutputAccumulatorBuffer`, for half-precision inputs in some kernel configurations),
its backward's float32 `delta` per query, and any scratch the kernel uses internally. Inputs the fused kernels
refuse (not 4-D) go to the math path, as on CUDA.

`cuda_sdpa_model()` overrides the op's AutogradCPU kernel while active (the override is removed on exit). On fake
tensors it calls the efficient kernel's own op, which FakeTensorMode answers with the meta function above. On real
CPU tensors (the estimator's own test against real compute) there is no such CPU kernel: the values (and, in
backward, the gradients) are computed by PyTorch's CPU math kernel outside every dispatch mode (nothing of it is
counted) and copied into tensors laid out as the efficient kernel and its backward allocate them, which are counted.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _disable_current_modes

MEMORY_EFFICIENT_ALIGNMENT = 16  # mem_eff_alignment in preprocess_mask
LOG_SUM_EXP_BLOCK = 32  # the log-sum-exp's last dimension is rounded up to this


@contextlib.contextmanager
def cuda_sdpa_model() -> Iterator[None]:
    """While active, `scaled_dot_product_attention` on CPU tensors allocates as CUDA's memory-efficient kernel."""
    library = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Overriding a previously registered kernel"
            library.impl("scaled_dot_product_attention", _efficient_attention, "AutogradCPU")
        yield
    finally:
        library._destroy()


def _efficient_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                         scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4 or enable_gqa:
        return torch.ops.aten._scaled_dot_product_attention_math(
            query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)[0]
    if attn_mask is not None:
        attn_mask = _preprocess_mask(_additive(attn_mask, query.dtype), query, key)
    compute_log_sumexp = torch.is_grad_enabled() and _requires_grad(query, key, value, attn_mask)
    if not isinstance(query, FakeTensor):
        if compute_log_sumexp:
            return _CountedEfficientAttention.apply(query, key, value, attn_mask, (dropout_p, is_causal, scale))
        return _computed_off_the_books(query, key, value, attn_mask, (dropout_p, is_causal, scale))
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, attn_mask, compute_log_sumexp, dropout_p, is_causal, scale=scale)[0]


def _requires_grad(*tensors: torch.Tensor | None) -> bool:
    return any(tensor is not None and tensor.requires_grad for tensor in tensors)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """convert_boolean_attn_mask: True takes part in attention."""
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask.logical_not(), -math.inf)


def _preprocess_mask(mask: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    mask = mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    last = mask.shape[-1]
    if last % MEMORY_EFFICIENT_ALIGNMENT:
        padding = MEMORY_EFFICIENT_ALIGNMENT - last % MEMORY_EFFICIENT_ALIGNMENT
        return torch.nn.functional.pad(mask, (0, padding))[..., :last]
    if any(stride % MEMORY_EFFICIENT_ALIGNMENT for stride in mask.stride()[:3]):
        return mask.contiguous()
    return mask


def _empty_output(query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The efficient kernel's output: (B, L, heads, Kv) in memory, returned as its (B, heads, L, Kv) transpose."""
    batch, heads, length, _ = query.shape
    return torch.empty(batch, length, heads, value.shape[-1], dtype=query.dtype).transpose(1, 2)


def _math_values(query, key, value, attn_mask, options: tuple[float, bool, float | None]) -> torch.Tensor:
    """The attention's values from PyTorch's CPU math kernel (options: dropout_p, is_causal, scale); call with
    every dispatch mode disabled."""
    dropout_p, is_causal, scale = options
    return torch.ops.aten._scaled_dot_product_attention_math(query, key, value, attn_mask, dropout_p, is_causal,
                                                              scale=scale)[0]


def _computed_off_the_books(query, key, value, attn_mask, options) -> torch.Tensor:
    """Real CPU tensors without gradients: the values from PyTorch's CPU kernel, unseen by any dispatch mode, in
    tensors allocated as the efficient kernel allocates them (the output, an empty log-sum-exp)."""
    output = _empty_output(query, value)
    torch.empty(query.shape[0], query.shape[1], 0, dtype=torch.float32)  # the log-sum-exp, not computed
    with _disable_current_modes():
        values = _math_values(query, key, value, attn_mask, options)
    return output.copy_(values)


class _CountedEfficientAttention(torch.autograd.Function):
    """Real CPU tensors with gradients (the estimator's test against real compute): what the efficient kernel and
    its backward allocate (the meta functions of `_scaled_dot_product_efficient_attention` and of its backward),
    with values computed by PyTorch's math kernel outside every dispatch mode. Saves what the kernel's autograd
    node saves: the inputs, the mask, the output and the log-sum-exp."""

    @staticmethod
    def forward(ctx, query, key, value, attn_mask, options):
        batch, heads, length, _ = query.shape
        output = _empty_output(query, value)
        log_sum_exp = torch.empty(batch, heads, math.ceil(length / LOG_SUM_EXP_BLOCK) * LOG_SUM_EXP_BLOCK,
                                  dtype=torch.float32)
        with _disable_current_modes():
            values = _math_values(query, key, value, attn_mask, options)
        output.copy_(values)
        ctx.options = options
        ctx.save_for_backward(query, key, value, attn_mask, output, log_sum_exp)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        query, key, value, attn_mask, _, _ = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:4]
        grads = [torch.empty_permuted(tensor.shape, (0, 2, 1, 3), dtype=tensor.dtype) if need else None
                 for tensor, need in zip((query, key, value), wanted[:3])]
        if attn_mask is not None and wanted[3]:
            last = attn_mask.shape[-1]
            aligned = -(-last // MEMORY_EFFICIENT_ALIGNMENT) * MEMORY_EFFICIENT_ALIGNMENT
            grads.append(torch.empty(*attn_mask.shape[:-1], aligned, dtype=attn_mask.dtype)[..., :last])
        else:
            grads.append(None)
        with _disable_current_modes(), torch.enable_grad():
            inputs = [tensor.detach().requires_grad_(need) if tensor is not None else None
                      for tensor, need in zip((query, key, value, attn_mask), wanted)]
            values = _math_values(*inputs, ctx.options)
            needed = [tensor for tensor, need in zip(inputs, wanted) if need and tensor is not None]
            computed = iter(torch.autograd.grad(values, needed, grad_output))
        for index, grad in enumerate(grads):
            if grad is not None:
                grad.copy_(next(computed))
        return (*grads, None)
