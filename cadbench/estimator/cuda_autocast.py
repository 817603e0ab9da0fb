"""CUDA's autocast policy, applied to CPU tensors, so a CPU (or fake-CPU) replay casts exactly as a GPU run would.

Why: the replay cannot use fake *CUDA* tensors on a machine without a CUDA driver. Their forward pass works, but the
autograd engine refuses to run backward (`GraphTask::stash_current_streams` asks the CUDA driver whether device 0
has a context: "hasPrimaryContext expects a valid device index"; pytorch/pytorch#92627). So the replay uses fake CPU
tensors, and CPU autocast casts differently from CUDA autocast: on CUDA softmax, layer_norm, pow, upsampling and
the loss run in float32; on CPU they run in bfloat16. That changes activation sizes.

`cuda_autocast_policy()` overrides the AutocastCPU kernel of every op that has an AutocastCUDA or AutocastCPU
kernel with a Python kernel implementing CUDA's policy (the op lists and cast rules of ATen/autocast_mode.h and
autocast_mode.cpp): lower-precision ops cast floating inputs to the autocast dtype (caching casts of float32 leaf
tensors that require grad until the outermost autocast region exits, as `cached_cast` does), float32 ops cast to
float32, "set dtype" ops get dtype=float32 (softmax and log_softmax of float16 inputs then take CUDA's
half-to-float kernel: `HALF_TO_FLOAT`), norm gets its dtype overload, promote ops run in the widest input type,
binary_cross_entropy is refused, and ops CUDA does not list are left alone. The overrides are removed on exit.
A test checks, op by op, that a CPU forward under this policy casts like a fake-CUDA forward under real CUDA autocast.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _disable_current_modes

from cadbench.errors import CadbenchError

LOWER_PRECISION = (
    "_convolution.deprecated", "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d.input", "conv_transpose3d.input", "convolution", "prelu", "addmm", "addmv", "addr", "matmul",
    "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul", "linalg_multi_dot",
    "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell",
    "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
)
FLOAT32 = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "sinh",
    "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm", "native_layer_norm",
    "rms_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim", "cosine_similarity",
    "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d", "hinge_embedding_loss", "kl_div",
    "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss", "multilabel_margin_loss",
    "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits", "dist",
    "pdist", "cdist", "renorm", "logsumexp", "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d",
    "_upsample_nearest_exact2d", "upsample_nearest3d", "_upsample_nearest_exact3d", "upsample_linear1d",
    "upsample_bilinear2d", "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d",
    "_upsample_bicubic2d_aa",
)
FLOAT32_SET_DTYPE = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
)
FLOAT32_APPEND_DTYPE = {"norm.Scalar": "ScalarOpt_dtype", "norm.ScalarOpt_dim": "ScalarOpt_dim_dtype"}
PROMOTE = (
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put", "tensordot",
    "scatter_add",
)
BANNED = ("binary_cross_entropy",)
# Registered for AutocastCUDA but only reachable with CUDA tensors (cuDNN kernels), or with no documented policy:
# never needed on CPU tensors; if one is reached, the replay stops rather than guess.
NOT_MODELLED = ("_cudnn_rnn", "cudnn_convolution", "cudnn_convolution_transpose", "linalg_matrix_sqrth")

_AUTOCAST_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def modelled_cuda_ops() -> set[str]:
    return {*LOWER_PRECISION, *FLOAT32, *FLOAT32_SET_DTYPE, *FLOAT32_APPEND_DTYPE, *PROMOTE, *BANNED, *NOT_MODELLED}


def registered_ops(dispatch_key: str) -> set[str]:
    """Op overload names ("softmax.int", "sum") with a kernel for `dispatch_key` in this PyTorch build."""
    return {name.removeprefix("aten::") for name in torch._C._dispatch_get_registrations_for_dispatch_key(dispatch_key)
            if name.startswith("aten::")}


def check_policy_matches_torch() -> None:
    """Raise if this PyTorch's AutocastCUDA op list is not the one modelled here (the policy would be a guess)."""
    unknown = registered_ops("AutocastCUDA") - modelled_cuda_ops()
    if unknown:
        raise CadbenchError(f"the CUDA autocast policy of torch {torch.__version__} lists ops cadbench does not model "
                            f"({', '.join(sorted(unknown))}); bf16 cannot be estimated faithfully")


@contextlib.contextmanager
def cuda_autocast_policy() -> Iterator[None]:
    """While active, CPU autocast follows CUDA's autocast policy (see the module docstring)."""
    check_policy_matches_torch()
    cache = _CastCache()
    library = torch.library.Library("aten", "IMPL")
    original_clear = torch.clear_autocast_cache
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Overriding a previously registered kernel" for AutocastCPU
            for name in registered_ops("AutocastCUDA") | registered_ops("AutocastCPU"):
                kernel = _kernel(name, cache)
                library.impl(name, kernel, "AutocastCPU", with_keyset=getattr(kernel, "with_keyset", False))

        def clear_autocast_cache() -> None:  # called by torch.autocast.__exit__ when the outermost region ends
            cache.clear()
            original_clear()

        torch.clear_autocast_cache = clear_autocast_cache
        yield
    finally:
        torch.clear_autocast_cache = original_clear
        cache.clear()
        library._destroy()


class _CastCache:
    """Lower-precision casts of float32 leaf tensors that require grad, kept for the autocast region (cached_cast)."""

    def __init__(self) -> None:
        self._casts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def clear(self) -> None:
        self._casts.clear()

    def cast(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if not _eligible(tensor) or tensor.dtype == dtype:
            return tensor
        cacheable = (dtype == torch.get_autocast_dtype("cpu") and tensor.dtype == torch.float32
                     and tensor.requires_grad and tensor.is_leaf and not tensor._is_view()
                     and torch.is_autocast_cache_enabled())
        if not cacheable:
            return tensor.to(dtype)
        hit = self._casts.get(id(tensor))
        if hit is not None and hit[0] is tensor:
            return hit[1]
        casted = tensor.to(dtype)
        self._casts[id(tensor)] = (tensor, casted)
        return casted


def _eligible(value: Any) -> bool:
    return (isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.is_floating_point()
            and value.dtype != torch.float64)


def _kernel(name: str, cache: _CastCache) -> Callable:
    op = _overload(name)
    if name in LOWER_PRECISION:
        return _casting(op, cache, lambda args, kwargs: torch.get_autocast_dtype("cpu"))
    if name in FLOAT32:
        return _casting(op, cache, lambda args, kwargs: torch.float32)
    if name in PROMOTE:
        return _casting(op, cache, _widest_type)
    if name in FLOAT32_SET_DTYPE:
        return _set_float32_dtype(op, name)
    if name in FLOAT32_APPEND_DTYPE:
        return _append_float32_dtype(getattr(torch.ops.aten.norm, FLOAT32_APPEND_DTYPE[name]))
    if name in BANNED:
        return _refuse(name, "is unsafe to autocast on CUDA (use binary_cross_entropy_with_logits)")
    if name in NOT_MODELLED:
        return _refuse(name, "has a CUDA autocast policy cadbench does not model")
    return _passthrough(op)  # an op only CPU autocast lists: CUDA autocast leaves it alone


def _overload(name: str) -> torch._ops.OpOverload:
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _passthrough(op: torch._ops.OpOverload) -> Callable:
    """A fallthrough: skip autocast for this op only (ops it decomposes into still meet autocast)."""
    below_autocast = torch._C._dispatch_keyset_full_after(torch._C.DispatchKey.AutocastCPU)

    def kernel(keyset, *args, **kwargs):
        return op.redispatch(keyset & below_autocast, *args, **kwargs)
    kernel.with_keyset = True
    return kernel


def _casting(op: torch._ops.OpOverload, cache: _CastCache, target: Callable) -> Callable:
    def cast(value: Any, dtype: torch.dtype) -> Any:
        if isinstance(value, torch.Tensor):
            return cache.cast(value, dtype)
        if isinstance(value, (list, tuple)) and any(isinstance(item, torch.Tensor) for item in value):
            return type(value)(cache.cast(item, dtype) if isinstance(item, torch.Tensor) else item for item in value)
        return value

    def kernel(*args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            dtype = target(args, kwargs)
            # The C++ wrapper casts in a parameter-pack expansion, which GCC evaluates right to left.
            values = [*args, *kwargs.values()]
            casted = [cast(value, dtype) for value in reversed(values)][::-1]
            return op(*casted[:len(args)], **dict(zip(kwargs, casted[len(args):])))
    return kernel


def _widest_type(args: tuple, kwargs: dict) -> torch.dtype:
    """promote_type: starting from the autocast dtype, float32 wins over lower precision; float64 is ignored."""
    current = torch.get_autocast_dtype("cpu")
    for value in _tensors(args, kwargs):
        if not _eligible(value):
            continue
        if current == torch.float32 or value.dtype == torch.float32:
            current = torch.float32
        elif value.dtype != current:
            raise RuntimeError("Unexpected floating ScalarType in at::autocast::prioritize")
    return current


def _tensors(args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (item for item in value if isinstance(item, torch.Tensor))


def _first_tensor(args: tuple) -> torch.Tensor | None:
    return next((value for value in args if isinstance(value, torch.Tensor)), None)


def _set_float32_dtype(op: torch._ops.OpOverload, name: str) -> Callable:
    names = [argument.name for argument in op._schema.arguments]
    position = names.index("dtype")

    def kernel(*args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            if _eligible(_first_tensor(args)):
                if len(args) > position:
                    if args[position] is None:
                        args = (*args[:position], torch.float32, *args[position + 1:])
                elif kwargs.get("dtype") is None:
                    kwargs = {**kwargs, "dtype": torch.float32}
            dtype = args[position] if len(args) > position else kwargs.get("dtype")
            if name in HALF_TO_FLOAT and args[0].dtype == torch.float16 and dtype == torch.float32:
                return _half_to_float(args[0], args[1], log=name.startswith("log_"))
            return op(*args, **kwargs)
    return kernel


# softmax and log_softmax of a float16 input asked for float32 (what autocast asks): CUDA's native `softmax` calls
# `_softmax(input, dim, half_to_float=True)`, which reads the half input and writes the float32 result directly;
# elsewhere the input is first copied to float32 (aten/src/ATen/native/SoftMax.cpp, `softmax` / `log_softmax`).
HALF_TO_FLOAT = ("softmax.int", "log_softmax.int")


def _half_to_float(tensor: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    """CUDA's half-to-float (log-)softmax: on fake tensors its own op (FakeTensorMode answers from the meta
    function); on real CPU tensors, where PyTorch has no such kernel, the same allocations with values computed
    outside every dispatch mode (`_HalfToFloatSoftmax`)."""
    if isinstance(tensor, FakeTensor):
        fused = torch.ops.aten._log_softmax.default if log else torch.ops.aten._softmax.default
        return fused(tensor, dim, True)
    return _HalfToFloatSoftmax.apply(tensor, dim, log)


class _HalfToFloatSoftmax(torch.autograd.Function):
    """Real CPU tensors: allocates as CUDA's `_softmax(half_to_float=True)` and its backward do (a float32 output,
    saved; a float16 gradient), computing the values off the books."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
        with _disable_current_modes():
            values = (torch.log_softmax if log else torch.softmax)(tensor.float(), dim)
        output = torch.empty(tensor.shape, dtype=torch.float32, device=tensor.device).copy_(values)
        ctx.save_for_backward(output)
        ctx.dim, ctx.log = dim, log
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (output,) = ctx.saved_tensors
        with _disable_current_modes():
            if ctx.log:
                values = grad - output.exp() * grad.sum(ctx.dim, keepdim=True)
            else:
                values = output * (grad - (grad * output).sum(ctx.dim, keepdim=True))
        return torch.empty(output.shape, dtype=torch.float16, device=output.device).copy_(values), None, None


def _append_float32_dtype(typed_op: torch._ops.OpOverload) -> Callable:
    def kernel(*args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            first = _first_tensor(args)
            dtype = torch.float32 if _eligible(first) else first.dtype
            return typed_op(*args, **kwargs, dtype=dtype)
    return kernel


def _refuse(name: str, why: str) -> Callable:
    def kernel(*args, **kwargs):
        raise CadbenchError(f"op aten.{name} {why}")
    return kernel
