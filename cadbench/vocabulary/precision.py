"""Precision: the dtype the training step computes in (autocast), a dimension of every cell."""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32",)
