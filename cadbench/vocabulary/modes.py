"""How a cell is measured (its mode) and which device the user asks for."""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["cuda", "cpu", "estimate"]  # how one cell is measured (see cadbench.harness.measure_cell)
Device = Literal["auto", "cuda", "cpu"]  # what the user asks for with --device
DEVICES: tuple[str, ...] = get_args(Device)
MODES: tuple[str, ...] = get_args(Mode)
