"""CUDA's fused attention kernels, modelled for the replay: what `scaled_dot_product_attention` allocates on a GPU,
applied to CPU (and fake CPU) tensors. Which kernel: the one PyTorch's dispatcher (`select_sdp_backend`,
aten/src/ATen/native/transformers/cuda/sdp_utils.cpp) picks on an Ampere-class card (sm80 and newer):

* **flash attention** (FlashAttention 2) for float16 and bfloat16 inputs without a mask, with q, k and v of the same
  head dimension, at most 256, and as many heads: SAM 2's Hiera and its decoder in bf16 and fp16;
* **the memory-efficient kernel** otherwise: float32, or a mask (the lean and the checkpointed encoder's relative
  positions on SAM's ViT, in every dtype).

Not modelled: older cards (V100, T4: no flash kernel, so the memory-efficient one in every dtype), and cuDNN's
attention, which PyTorch built for CUDA 13 with cuDNN newer than 9.15 prefers on Hopper and Blackwell cards
(`check_prefer_cudnn_attention`); its workspace is chosen at run time.

Flash attention, from PyTorch's `scaled_dot_product_attention` (its `flash_attention` case), the kernel's meta
function (`meta__scaled_dot_product_flash_attention`) and its CUDA code (`_flash_attention_forward` and
`_flash_attention_backward` in attention.cu and attention_backward.cu, `mha_fwd` and `mha_bwd` in flash_api.cpp):

* q, k and v padded to a head dimension that is a multiple of 8 when it is not (`pad_last_dim<8>`: new tensors, the
  output sliced back);
* the output, laid out as the query, and the log-sum-exp per query, float32 (B, heads, L), kept for backward; the
  philox seed and offset live on the host without dropout;
* in backward: the output's gradient and the output made contiguous in the kernel's (B, L, heads, K) layout when
  they are not (the output is laid out so for SAM 2's attention, whose queries come as (B, L, heads, K)); the
  gradients of q, k and v, laid out as each; then two float32 buffers that live only while the kernel runs,
  `softmax_d` (B, heads, L rounded up to 128) and `dq_accum` (B, L rounded up to 128, heads, K rounded up to 32).
  On Hiera's pooled-query blocks (4 queries per window) the rounding makes them large: up to 407 MB per image on
  hiera_l at 1024 px.

Not modelled for flash: split-KV accumulators (`set_params_splitkv`, float32, only for launches with fewer blocks
than the card has processors: SAM 2's decoder at small batch, a few KiB), and dropout's device-side random state.

The memory-efficient kernel, from the same function (its `efficient_attention` case) and the kernel's meta function
(torch/_meta_registrations.py, `meta__scaled_dot_product_efficient_attention`):

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

Why a model at all: the replay runs on fake CPU tensors (see cuda_autocast for why not fake CUDA ones), and on CPU
tensors PyTorch dispatches `scaled_dot_product_attention` to its CPU kernels, which allocate differently from CUDA's.

`cuda_sdpa_model()` overrides the op's AutogradCPU kernel while active (the override is removed on exit). On fake
tensors it calls the chosen kernel's own op (and, for flash attention, its backward's op), which FakeTensorMode
answers with their meta functions; those ops count the attention's FLOPs. On real CPU tensors (the estimator's own
test against real compute) there are no such CPU kernels: the values (and, in backward, the gradients) are computed
by PyTorch's CPU math kernel outside every dispatch mode (nothing of it is counted) and copied into tensors laid out
as the kernel and its backward allocate them, which are counted.
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
FLASH_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MAX_HEAD_DIM = 256  # check_head_dim_size_flash
FLASH_HEAD_DIM_MULTIPLE = 8  # pad_last_dim<8>
FLASH_QUERY_BLOCK = 128  # mha_bwd's seqlen_q_rounded
FLASH_HEAD_DIM_BLOCK = 32  # mha_bwd's head_size_rounded


@contextlib.contextmanager
def cuda_sdpa_model() -> Iterator[None]:
    """While active, `scaled_dot_product_attention` on CPU tensors allocates as the CUDA kernel it would run."""
    library = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Overriding a previously registered kernel"
            library.impl("scaled_dot_product_attention", _cuda_attention, "AutogradCPU")
        yield
    finally:
        library._destroy()


def _cuda_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                    scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4 or enable_gqa:
        return torch.ops.aten._scaled_dot_product_attention_math(
            query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)[0]
    if flash_attention_applies(query, key, value, attn_mask):
        return _flash_attention(query, key, value, (dropout_p, is_causal, scale))
    if attn_mask is not None:
        attn_mask = _preprocess_mask(_additive(attn_mask, query.dtype), query, key)
    compute_log_sumexp = torch.is_grad_enabled() and _requires_grad(query, key, value, attn_mask)
    if not isinstance(query, FakeTensor):
        if compute_log_sumexp:
            return _CountedEfficientAttention.apply(query, key, value, attn_mask, (dropout_p, is_causal, scale))
        return _computed_off_the_books(query, key, value, attn_mask, (dropout_p, is_causal, scale))
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, attn_mask, compute_log_sumexp, dropout_p, is_causal, scale=scale)[0]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


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
        log_sum_exp = torch.empty(batch, heads, _round_up(length, LOG_SUM_EXP_BLOCK), dtype=torch.float32)
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
            aligned = _round_up(last, MEMORY_EFFICIENT_ALIGNMENT)
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


def flash_attention_applies(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attn_mask: torch.Tensor | None) -> bool:
    """Whether CUDA runs these 4-D inputs with flash attention on an Ampere-class card (sdp_utils.cpp,
    `use_flash_attention`): a half type, no mask, q, k and v of one head dimension of at most 256, as many images
    and heads, no empty sequence, each with a contiguous last dimension."""
    tensors = (query, key, value)
    return (attn_mask is None and query.dtype in FLASH_DTYPES and all(tensor.dtype == query.dtype for tensor in tensors)
            and query.shape[-1] == key.shape[-1] == value.shape[-1] <= FLASH_MAX_HEAD_DIM
            and query.shape[:2] == key.shape[:2] == value.shape[:2]
            and all(tensor.shape[2] > 0 and tensor.stride(-1) == 1 for tensor in tensors))


def _flash_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     options: tuple[float, bool, float | None]) -> torch.Tensor:
    """`scaled_dot_product_attention`'s flash case: inputs padded to a head dimension that is a multiple of 8 (the
    scale still that of the unpadded one), the kernel, the output sliced back."""
    head_dim = query.shape[-1]
    padding = -head_dim % FLASH_HEAD_DIM_MULTIPLE
    if padding:
        dropout_p, is_causal, scale = options
        options = (dropout_p, is_causal, 1.0 / math.sqrt(head_dim) if scale is None else scale)
        query, key, value = (torch.nn.functional.pad(tensor, (0, padding)) for tensor in (query, key, value))
    if torch.is_grad_enabled() and _requires_grad(query, key, value):
        output = _FlashAttention.apply(query, key, value, options)
    else:
        output = _flash_forward(query, key, value, options)[0]
    return output[..., :head_dim] if padding else output


def _flash_forward(query, key, value, options) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """The kernel's output and log-sum-exp (the meta function's, on fake tensors: the output laid out as the query, the
    log-sum-exp float32 (B, heads, L), an empty debug mask; the seed and offset are host memory on CUDA, which the
    tracker leaves out; they are returned for the backward). On real tensors the same allocations, with the values
    of PyTorch's CPU math kernel."""
    dropout_p, is_causal, scale = options
    if isinstance(query, FakeTensor):
        result = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                                     scale=scale)
        return result[0], result[1], (result[6], result[7])
    output = torch.empty_like(query)
    log_sum_exp = torch.empty(*query.shape[:3], dtype=torch.float32)
    torch.empty(0, dtype=query.dtype)  # the debug mask, not asked for
    with _disable_current_modes():
        values = _math_values(query, key, value, None, options)
    return output.copy_(values), log_sum_exp, ()


class _FlashAttention(torch.autograd.Function):
    """Flash attention with gradients: the forward saves what the kernel's autograd node saves (q, k, v, the output
    and the log-sum-exp); the backward allocates as `_flash_attention_backward` and `mha_bwd` do (module docstring),
    with the gradients' values, on real tensors, from PyTorch's CPU math kernel outside every dispatch mode."""

    @staticmethod
    def forward(ctx, query, key, value, options):
        output, log_sum_exp, ctx.philox = _flash_forward(query, key, value, options)
        ctx.options = options
        ctx.save_for_backward(query, key, value, output, log_sum_exp)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        query, key, value, output, log_sum_exp = ctx.saved_tensors
        dropout_p, is_causal, scale = ctx.options
        # the kernel reads the output's gradient and the output contiguous in its (B, L, heads, K) layout
        # (`_flash_attention_backward`): a copy of each where it is not, kept until the kernel returns
        grad_output, output = (tensor.transpose(1, 2).contiguous().transpose(1, 2) for tensor in (grad_output, output))
        fake = isinstance(query, FakeTensor)
        if fake:
            grads = torch.ops.aten._scaled_dot_product_flash_attention_backward(
                grad_output, query, key, value, output, log_sum_exp, None, None, query.shape[2], key.shape[2],
                dropout_p, is_causal, *ctx.philox, scale=scale)
        else:
            grads = tuple(torch.empty_like(tensor) for tensor in (query, key, value))
        batch, heads, length, head_dim = query.shape
        rows = _round_up(length, FLASH_QUERY_BLOCK)
        softmax_d = torch.empty(batch, heads, rows, dtype=torch.float32)
        dq_accum = torch.empty(batch, rows, heads, _round_up(head_dim, FLASH_HEAD_DIM_BLOCK), dtype=torch.float32)
        if not fake:
            with _disable_current_modes(), torch.enable_grad():
                inputs = [tensor.detach().requires_grad_(True) for tensor in (query, key, value)]
                values = _math_values(*inputs, None, ctx.options)
                for grad, computed in zip(grads, torch.autograd.grad(values, inputs, grad_output)):
                    grad.copy_(computed)
        del dq_accum, softmax_d  # mha_bwd's buffers, freed when the kernel returns
        return (*grads, None)
