"""The sweep's grid: method x backbone x batch size x precision, validated up front."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from typing import Iterable

from cadbench.backbones import get_backbone
from cadbench.errors import CadbenchError
from cadbench.registry import get_method
from cadbench.training.step import check_precision


@dataclass(frozen=True)
class Cell:
    method: str
    backbone: str
    batch_size: int
    precision: str = "fp32"

    @property
    def key(self) -> str:
        return f"{self.method}/{self.backbone}/{self.batch_size}/{self.precision}"

    @property
    def label(self) -> str:
        return f"{self.method} · {get_backbone(self.backbone).label} · batch {self.batch_size} · {self.precision}"

    def as_dict(self) -> dict:
        return asdict(self)


def expand_grid(
    methods: Iterable[str], backbones: Iterable[str], batch_sizes: Iterable[int], precisions: Iterable[str] = ("fp32",)
) -> list[Cell]:
    """All cells, backbone-major so that a sweep finishes the small backbones first. Raises on any bad name."""
    methods, backbones, batch_sizes, precisions = list(methods), list(backbones), list(batch_sizes), list(precisions)
    for name in methods:
        get_method(name)
    for name in backbones:
        get_backbone(name)
    for precision in precisions:
        check_precision(precision)
    for size in batch_sizes:
        if size <= 0:
            raise CadbenchError(f"batch size must be a positive integer, got {size}")
    cells = [Cell(method, backbone, size, precision)
             for backbone, size, precision, method in product(backbones, batch_sizes, precisions, methods)]
    return list(dict.fromkeys(cells))  # duplicates in the lists give each cell once
