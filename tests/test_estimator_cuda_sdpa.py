"""CUDA's fused attention as the replay models it (cadbench.estimator.cuda_sdpa): which kernel, what each allocates,
fake == real, and values equal to PyTorch's own attention."""

import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from cadbench.estimator.cuda_sdpa import cuda_sdpa_model, flash_attention_applies
from cadbench.estimator.tracker import MemoryTracker

sdpa = torch.nn.functional.scaled_dot_product_attention


def _qkv(dtype=torch.bfloat16, length=100, head_dim=24, requires_grad=True):
    # laid out as Hiera makes them: one (B, L, 3, heads, K) projection, unbound and transposed to (B, heads, L, K)
    qkv = torch.randn(2, length, 3, 2, head_dim, dtype=dtype)
    return [tensor.transpose(1, 2).requires_grad_(requires_grad) for tensor in qkv.unbind(2)]


def test_flash_attention_is_the_kernel_for_half_types_without_a_mask_and_memory_efficient_otherwise():
    query, key, value = _qkv(requires_grad=False)
    assert flash_attention_applies(query, key, value, None)
    assert flash_attention_applies(*_qkv(torch.float16, requires_grad=False), None)
    assert not flash_attention_applies(*_qkv(torch.float32, requires_grad=False), None)
    assert not flash_attention_applies(query, key, value, torch.zeros(100, 100, dtype=torch.bfloat16))
    assert not flash_attention_applies(*_qkv(head_dim=264, requires_grad=False), None)  # more than 256
    assert not flash_attention_applies(query, key[:, :1], value[:, :1], None)  # fewer key heads


def _requested_sizes(fake: bool, head_dim: int, heads_first: bool = False) -> list[tuple[bool, int]]:
    """Allocations and frees of one attention's forward and backward. heads_first: q, k and v contiguous as
    (B, heads, L, K), not as Hiera makes them."""
    tracker = MemoryTracker()
    tracker.trace = []
    with (FakeTensorMode(allow_fallback_kernels=False) if fake else contextlib.nullcontext()), \
            cuda_sdpa_model(), tracker:
        if heads_first:
            query, key, value = (torch.randn(2, 2, 100, head_dim, dtype=torch.bfloat16, requires_grad=True)
                                 for _ in range(3))
        else:
            query, key, value = _qkv(head_dim=head_dim)
        sdpa(query, key, value).sum().backward()
    return [(allocated, block.requested) for allocated, block in tracker.trace]


@pytest.mark.parametrize("fake", [True, False])
def test_flash_attention_allocates_as_its_cuda_kernel_in_forward_and_backward(fake):
    """B 2, heads 2, L 100, K 24, bf16: the sizes flash_api.cpp's mha_fwd and mha_bwd give."""
    sizes = _requested_sizes(fake, head_dim=24)
    allocated = [size for is_allocation, size in sizes if is_allocation]
    qkv, one = 2 * 100 * 3 * 2 * 24 * 2, 2 * 2 * 100 * 24 * 2  # the projection; q, k, v or the output, bf16
    forward = [one, 2 * 2 * 100 * 4, 0]  # output, log-sum-exp (float32), the debug mask (empty)
    backward = [one, one, one,  # the gradients of q, k and v
                2 * 2 * 128 * 4,  # softmax_d: (B, heads, L rounded up to 128), float32
                2 * 128 * 2 * 32 * 4]  # dq_accum: (B, L rounded up to 128, heads, K rounded up to 32), float32
    assert allocated[:4] == [qkv] + forward
    assert backward == allocated[allocated.index(2 * 2 * 128 * 4) - 3:allocated.index(2 * 2 * 128 * 4) + 2]
    # the two float32 buffers live only while the kernel runs: freed before the gradients are
    frees = [size for is_allocation, size in sizes if not is_allocation]
    assert frees.index(backward[4]) < frees.index(backward[3]) < frees.index(one)


def test_flash_attention_fake_and_real_replays_allocate_alike_including_padding_to_a_multiple_of_8():
    for head_dim in (24, 20):  # 20: q, k and v padded to 24 (new tensors), the output sliced back
        assert _requested_sizes(True, head_dim) == _requested_sizes(False, head_dim)
    padded = [size for allocated, size in _requested_sizes(False, 20) if allocated]
    assert padded[1:4] == [2 * 2 * 100 * 24 * 2] * 3


def test_the_modelled_kernels_give_pytorchs_attention_and_gradients():
    for dtype, mask in ((torch.bfloat16, None), (torch.float32, None), (torch.float32, torch.randn(100, 100))):
        inputs = _qkv(dtype, head_dim=20)
        expected = sdpa(*inputs, attn_mask=mask)
        expected_grads = torch.autograd.grad(expected.float().square().sum(), inputs)
        with cuda_sdpa_model():
            modelled = sdpa(*inputs, attn_mask=mask)
            modelled_grads = torch.autograd.grad(modelled.float().square().sum(), inputs)
        assert modelled.dtype == dtype
        tolerance = {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {"atol": 1e-5, "rtol": 1e-4}
        torch.testing.assert_close(modelled, expected, **tolerance)
        for grad, expected_grad in zip(modelled_grads, expected_grads):
            torch.testing.assert_close(grad, expected_grad, **tolerance)


@pytest.mark.parametrize("fake", [True, False])
def test_flash_attentions_backward_copies_an_output_not_laid_out_as_the_kernel_reads_it(fake):
    """`_flash_attention_backward` reads the output as (B, L, heads, K), contiguous: the output of (B, heads, L, K)
    inputs is laid out as they are, so backward copies it (one more output-sized block before the gradients); Hiera's
    is not copied."""
    one, softmax_d = 2 * 2 * 100 * 24 * 2, 2 * 2 * 128 * 4

    def before_the_buffers(sizes):
        allocated = [size for is_allocation, size in sizes if is_allocation]
        forward_end = allocated.index(2 * 2 * 100 * 4) + 2  # after the log-sum-exp and the empty debug mask
        return allocated[forward_end:allocated.index(softmax_d)]

    hiera = before_the_buffers(_requested_sizes(fake, head_dim=24))
    heads_first = before_the_buffers(_requested_sizes(fake, head_dim=24, heads_first=True))
    assert heads_first.count(one) == hiera.count(one) + 1
    assert _requested_sizes(True, 24, heads_first=True) == _requested_sizes(False, 24, heads_first=True)
