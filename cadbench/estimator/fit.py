"""Does it fit? The largest batch size whose simulated out-of-memory line fits a GPU's memory.

A batch size fits a capacity when `estimate.oom_capacity_bytes(cuda_context_bytes) <= capacity_bytes`: the least
memory the simulated caching allocator needs for setup, warm-up and the measured step to finish without OOM (its
release-and-retry included, fragmentation and rounding counted), plus the CUDA context outside the allocator. It is a
simulation of the allocator's algorithm on the estimator's trace (see reserved), not a measurement.

The search: memory is close to affine in the batch size for these models, so a line through two replayed batch sizes
predicts where the capacity is crossed, and the search replays that batch size and its neighbour. A prediction only
chooses what to replay next: the answer B is returned only once B was replayed and fits and B + 1 was replayed and
does not (or B is `max_batch`), so no answer is ever extrapolated. The search keeps the largest size known to fit and
the smallest known not to.
- While no size is known not to fit, the line goes through the two largest that fit (or, where the OOM line dipped
  between them, the smallest and the largest that fit). A prediction that fell short (the curve bends down: SAM's
  OOM line grows by less per image past its first few images) is followed by another from the new points, never by a
  leap to half of `max_batch`: replays grow dearer with the batch size (the mask decoder runs once per image), and
  one at 36 costs as much as four at 3.
- Once a size is known not to fit, the line goes through the two sizes that bracket the crossing, and the search
  bisects between them when a prediction does not halve the bracket.
It assumes the line does not decrease with the batch size. That holds across the range, but not between every two
neighbours: the simulated allocator's rounding can make one batch size need a little less than the one before (0.46 GB
less at 12 than at 11 for decoder_only on vit_h). Where a dip lies across a capacity, the answer is still a B that fits
with B + 1 that does not, both replayed, but which side of the dip it lands on depends on the sizes replayed before:
cad on sam2.1_hiera_l needs 35.70, 40.17, 39.95 and 41.96 GB at 17 to 20 (estimated), and at 40 GB the answer is 19,
with 18 not fitting (the search before 6d1974d answered 17).

Several cards are answered by one search per card, smallest first, sharing the replays: each card's search reads
every batch size replayed before (they cost nothing: estimates are kept), so it starts from the crossings already
found and mostly replays its own B and B + 1 (`largest_fitting_batches`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

from cadbench.errors import CadbenchError
from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.estimator.cells import estimate_cell
from cadbench.estimator.cuda_runtime import DEFAULT_CUDA_CONTEXT_BYTES
from cadbench.vocabulary.cell import Cell

DEFAULT_MAX_BATCH = 64


def largest_fitting_batch(cell: Cell, capacity_bytes: int, cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES,
                          max_batch: int = DEFAULT_MAX_BATCH, alloc_conf: AllocatorConfig | None = None,
                          replayed: Iterable[int] = ()) -> int:
    """The largest batch size <= max_batch at which `cell` (its own batch size ignored) fits `capacity_bytes`
    under the allocator settings `alloc_conf` (default: the environment's); 0 if not even batch size 1 fits.
    `replayed`: batch sizes of this cell the caller has already estimated (free to look at: estimates are kept),
    which the search reads before it predicts (see `search_largest`)."""
    return largest_fitting_batches(cell, [capacity_bytes], cuda_context_bytes, max_batch, alloc_conf, replayed)[0]


def largest_fitting_batches(cell: Cell, capacities_bytes: Iterable[int],
                            cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
                            alloc_conf: AllocatorConfig | None = None, replayed: Iterable[int] = ()) -> list[int]:
    """`largest_fitting_batch` for each capacity, in the order given. The capacities are searched smallest first,
    each search reading every batch size replayed before it as free (see the module docstring): the answers are
    those of separate searches, from fewer replays."""
    capacities_bytes = list(capacities_bytes)
    if any(capacity <= 0 for capacity in capacities_bytes) or cuda_context_bytes < 0 or max_batch < 1:
        raise CadbenchError(f"capacity must be positive, CUDA context not negative and max batch at least 1 "
                            f"(got {', '.join(map(str, capacities_bytes))}, {cuda_context_bytes}, {max_batch})")
    config = AllocatorConfig.from_environment() if alloc_conf is None else alloc_conf
    if not config.simulated:
        raise CadbenchError(f"cannot tell what fits with allocator setting {', '.join(config.not_simulated)}: the "
                            f"caching-allocator simulation does not model it")
    needs: dict[int, int] = {}

    def needed(batch_size: int) -> int:
        if batch_size not in needs:
            needs[batch_size] = estimate_cell(replace(cell, batch_size=batch_size), alloc_conf=config) \
                .oom_capacity_bytes(cuda_context_bytes)
        return needs[batch_size]

    replayed = list(replayed)
    answers = {capacity: search_largest(needed, capacity, max_batch, free=[*replayed, *needs])
               for capacity in sorted(set(capacities_bytes))}
    return [answers[capacity] for capacity in capacities_bytes]


def search_largest(needed: Callable[[int], int], capacity_bytes: int, max_batch: int,
                   free: Iterable[int] = ()) -> int:
    """The largest B <= max_batch with needed(B) <= capacity_bytes (0 if not even 1 fits), calling `needed` at B
    and at B + 1 (unless B is max_batch) before answering; the affine prediction only picks what to try next.

    `free`: batch sizes whose `needed` costs nothing (already replayed): read right after batch size 1, they narrow
    the interval and give the first line its second point, which would otherwise cost a replay at batch size 2
    (`cadbench fit --target-batch B` has always replayed B first)."""
    known: dict[int, int] = {}

    def fits(batch_size: int) -> bool:
        if batch_size not in known:
            known[batch_size] = needed(batch_size)
        return known[batch_size] <= capacity_bytes

    if not fits(1):
        return 0
    low, high = 1, max_batch + 1  # low fits; high does not (or is past the limit)
    for batch_size in sorted(set(free)):
        if low < batch_size < high:
            if fits(batch_size):
                low = batch_size
            else:
                high = batch_size
    stalled = False  # the last prediction did not halve the interval (a curve far from a line): bisect next
    while high - low > 1:
        guess = None if stalled else _predict(known, low, high, capacity_bytes)
        predicted = guess is not None and len(known) >= 2
        before = high - low
        probe = min(max(guess, low + 1), high - 1) if guess is not None else (low + high) // 2
        if fits(probe):
            low = probe
        else:
            high = probe
        neighbour = probe + 1 if low == probe else probe - 1
        if predicted and low < neighbour < high:  # a predicted crossing: its neighbour usually settles it
            if fits(neighbour):
                low = neighbour
            else:
                high = neighbour
        # a prediction that did not halve a bracket: a curve far from a line, bisect next (with no size known not
        # to fit, there is no bracket to halve: the next line goes through the two largest that fit)
        stalled = predicted and high in known and high - low > before / 2
    return low


def _predict(known: dict[int, int], low: int, high: int, capacity_bytes: int) -> int | None:
    """The batch size where the line through two replayed sizes reaches `capacity_bytes`: the two that bracket the
    crossing when both were replayed, else the two largest that fit, or, where those two do not grow (the OOM line
    can dip by a little from one batch size to the next: vit_h's decoder_only needs 0.46 GB less at 12 than at 11),
    the smallest and the largest that fit. None when there is no such line, or it does not grow."""
    if high in known:
        lines = [[(low, known[low]), (high, known[high])]]
    else:
        fitting = sorted((size, need) for size, need in known.items() if size <= low)
        if len(fitting) < 2:
            return low + 1  # one point: its neighbour gives the slope
        lines = [fitting[-2:], [fitting[0], fitting[-1]]]
    for (b1, m1), (b2, m2) in lines:
        slope = (m2 - m1) / (b2 - b1)
        if slope > 0:
            return int(b1 + (capacity_bytes - m1) // slope)
    return None


@dataclass(frozen=True)
class FitRow:
    cell: Cell  # its batch size is the one searched from
    capacity_bytes: int
    cuda_context_bytes: int
    largest_batch: int  # 0: not even batch size 1 fits

    def as_dict(self) -> dict:
        identity = {name: value for name, value in self.cell.as_dict().items() if name != "batch_size"}
        return {**identity, "capacity_bytes": self.capacity_bytes, "cuda_context_bytes": self.cuda_context_bytes,
                "largest_batch": self.largest_batch}


def fit_table(cells: Iterable[Cell], capacities_bytes: Iterable[int],
              cuda_context_bytes: int = DEFAULT_CUDA_CONTEXT_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
              alloc_conf: AllocatorConfig | None = None) -> list[FitRow]:
    """`largest_fitting_batch` for every cell x capacity (each cell's capacities searched together)."""
    capacities_bytes = list(capacities_bytes)
    return [FitRow(cell, capacity, cuda_context_bytes, largest)
            for cell in cells for capacity, largest in zip(capacities_bytes, largest_fitting_batches(
                cell, capacities_bytes, cuda_context_bytes, max_batch, alloc_conf))]
