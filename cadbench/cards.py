"""The GPU cards cadbench answers "does it fit?" for by default: one list, shared by `cadbench fit` and the
report's fit table, so the two always speak of the same cards.

8 GB (RTX 2070/3070 class, the "can I train this with 8 GB?" question), 24 GB (RTX 3090/4090, A10), 40 GB and
80 GB (A100), 48 GB (A6000, L40S). GB are decimal (10^9 bytes), as vendors state capacities.
"""

from __future__ import annotations

GPU_CAPACITIES_GB: tuple[int, ...] = (8, 24, 40, 48, 80)
DEFAULT_GPU_MEMORY = ",".join(f"{capacity}GB" for capacity in GPU_CAPACITIES_GB)
