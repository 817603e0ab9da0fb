"""The replay's bf16 and fp16 casts follow CUDA's autocast policy, checked op by op against real AutocastCUDA kernels.

Fake CUDA tensors can run a forward pass without a GPU (only backward needs a CUDA driver), and under
`torch.autocast("cuda")` that forward goes through PyTorch's own AutocastCUDA kernels. The emulated policy, applied
to fake CPU tensors, must produce the same ops with the same dtypes and shapes.
"""

from unittest import mock

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from cadbench.estimator.cuda_autocast import check_policy_matches_torch, cuda_autocast_policy
from cadbench.methods import BUILTIN_METHODS
from cadbench.training.levers import apply_levers
from cadbench.training.protocol import segmentation_loss, upsample_logits
from cadbench.datasets.batch import random_batch
from cadbench.training.setup import prepare
from cadbench.vocabulary.cell import Cell

METHODS = tuple(BUILTIN_METHODS)

_DEVICE_COPY = torch.ops.aten._to_copy.default
_PRIM_DEVICE = torch.ops.prim.device.default


class _OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is _PRIM_DEVICE:
            return out
        outs = [t for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, torch.Tensor)]
        source = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if func is _DEVICE_COPY and source is not None and outs[0].dtype == source.dtype:
            return out  # a device move (CPU constant -> CUDA), not a cast
        self.ops.append((str(func), tuple((t.dtype, tuple(t.shape)) for t in outs)))
        return out


def _forward_ops(method: str, device: str, emulate: bool, backbone: str = "test_scale",
                 dtype: torch.dtype = torch.bfloat16, levers: dict | None = None) -> list:
    cuda_autocast_available = mock.patch("torch.cuda.amp.common.amp_definitely_not_available", lambda: False)
    bf16_supported = mock.patch("torch.cuda.is_bf16_supported", lambda *args, **kwargs: True)
    with FakeTensorMode(), cuda_autocast_available, bf16_supported:
        torch.manual_seed(0)
        trainee = prepare(method, backbone, device=device)
        if levers:
            apply_levers(Cell(method, backbone, 2, **levers), trainee)
        for module in trainee.method.modules():  # Meta's Sam builds pixel_mean/std on the CPU whatever the device
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and buffer.device.type != device:
                    module._buffers[name] = buffer.to(device)
        batch = random_batch(trainee.image_size, 2).to(device)
        log = _OpLog()
        policy = cuda_autocast_policy() if emulate else torch.autocast("cpu", enabled=False)
        with policy, log, torch.autocast(device, dtype=dtype):
            logits = upsample_logits(trainee.method(batch.images), tuple(batch.masks.shape[-2:]))
            segmentation_loss(logits, batch.masks)
    return log.ops


def _batch_norm(op: tuple) -> bool:
    """A batch-norm kernel's op, or the empty reserve tensor the CPU path makes for it."""
    return "batch_norm" in op[0] or (op[0] == "aten.empty.memory_format" and op[1] == ((torch.uint8, (0,)),))


def _has_batch_norm(method: str) -> bool:
    with torch.device("meta"):
        modules = prepare(method, "test_scale", device="meta").method.modules()
    return any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm) for module in modules)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", METHODS)
def test_emulated_policy_casts_like_cuda_autocast(method, dtype):
    on_cuda = _forward_ops(method, "cuda", emulate=False, dtype=dtype)
    emulated = _forward_ops(method, "cpu", emulate=True, dtype=dtype)
    if _has_batch_norm(method):
        # The one difference is not autocast's: BatchNorm's kernel. CUDA's saves its statistics in float32 (and with
        # fp16 runs cuDNN's, which returns an empty reserve tensor); the CPU one saves them in the half type (a few
        # hundred bytes here, stated in the estimate's notes). The activations are the same.
        assert [op for op in on_cuda if _batch_norm(op)] != [op for op in emulated if _batch_norm(op)]
        on_cuda = [op for op in on_cuda if not _batch_norm(op)]
        emulated = [op for op in emulated if not _batch_norm(op)]
    assert len(on_cuda) > 500
    assert emulated == on_cuda


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emulated_policy_casts_like_cuda_autocast_on_a_full_size_backbone(dtype):
    assert _forward_ops("sam_adapter", "cpu", emulate=True, backbone="vit_b", dtype=dtype) == \
        _forward_ops("sam_adapter", "cuda", emulate=False, backbone="vit_b", dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emulated_policy_casts_frozen_bf16_weights_like_cuda_autocast(dtype):
    """Frozen weights stored in bf16 and read upcast (the frozen_dtype lever) meet autocast as float32 weights do."""
    levers = {"frozen_dtype": "bf16", "checkpointing": "encoder"}
    assert _forward_ops("sam_adapter", "cpu", emulate=True, dtype=dtype, levers=levers) == \
        _forward_ops("sam_adapter", "cuda", emulate=False, dtype=dtype, levers=levers)


def test_plain_cpu_autocast_would_differ():
    """Why the emulation exists: CPU autocast keeps softmax and layer norm in bfloat16, CUDA in float32."""
    assert _forward_ops("decoder_only", "cpu", emulate=False) != _forward_ops("decoder_only", "cuda", emulate=False)


def test_policy_covers_this_torch():
    check_policy_matches_torch()


def test_overrides_are_removed_on_exit():
    x = torch.randn(4, 4)
    with cuda_autocast_policy():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.softmax(x, -1).dtype == torch.float32  # CUDA's policy
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.softmax(x.bfloat16(), -1).dtype == torch.bfloat16  # CPU's own policy again
        assert (x @ x).dtype == torch.bfloat16
