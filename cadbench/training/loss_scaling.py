"""Loss scaling for fp16 training: one `torch.amp.GradScaler` per optimizer, kept as long as the optimizer lives.

fp16 has a narrow exponent range: small gradients underflow to zero unless the loss is scaled up before backward and
the gradients scaled back down before the optimizer step (which is skipped when a gradient overflowed; the scale
then shrinks, and grows again after 2000 clean steps). That is PyTorch's `GradScaler`, used unchanged: its scale
and growth tracker are state that must survive from one step to the next, so the scaler belongs with the optimizer,
not with a step. bf16 has float32's exponent range and needs no scaler.

`LossScaler` differs from `GradScaler` in one place, for the estimator's replay on fake tensors: whether a gradient
overflowed is read from the device (`found_inf.item()`), and a fake tensor has no value to read. There the step is
taken, as in every step that does not overflow (the steady state a memory measurement describes); everything the
scaler allocates (its scale, growth tracker, per-step `found_inf` and inverse scale, the scaled loss) is made by
GradScaler's own code, so the replay counts it.
"""

from __future__ import annotations

import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensor


class LossScaler(torch.amp.GradScaler):
    """`torch.amp.GradScaler`, replayable on fake tensors (see the module docstring)."""

    def _maybe_opt_step(self, optimizer, optimizer_state, *args, **kwargs):
        found = optimizer_state["found_inf_per_device"].values()
        if any(isinstance(value, FakeTensor) for value in found):
            return optimizer.step(*args, **kwargs)  # no value to read: the step of a run that did not overflow
        return super()._maybe_opt_step(optimizer, optimizer_state, *args, **kwargs)


_SCALERS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, LossScaler]" = weakref.WeakKeyDictionary()


def loss_scaler(optimizer: torch.optim.Optimizer, device: torch.device) -> LossScaler:
    """The loss scaler of `optimizer` (made on first use, on `device`'s type)."""
    scaler = _SCALERS.get(optimizer)
    if scaler is None:
        scaler = _SCALERS[optimizer] = LossScaler(device.type)
    return scaler
