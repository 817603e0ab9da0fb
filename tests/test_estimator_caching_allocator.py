"""The caching-allocator simulation on hand-built traces.

Each expected layout was worked out by hand from `c10/cuda/CUDACachingAllocator.cpp` (DeviceCachingAllocator); each
docstring names the rule and the function it checks. A layout is `segments()`: every segment's blocks in address
order as (size, allocated).
"""

import random

import pytest

from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.estimator.caching_allocator import CachingAllocator, OutOfMemory, _roundup_power2_next_division

KiB, MiB = 1 << 10, 1 << 20


def test_small_requests_are_packed_into_2_mib_segments():
    """Small pool (`get_pool`: rounded size <= kSmallSize, 1 MiB), `get_allocation_size` (kSmallBuffer, 2 MiB),
    `round_size` (512 B), `should_split` (small pool: split when >= 512 B remain), best fit (`get_free_block`)."""
    allocator = CachingAllocator()
    allocator.malloc(0, 1)  # 512 B: a new 2 MiB segment, split
    allocator.malloc(1, 1000)  # 1 KiB from the rest of it
    allocator.malloc(2, MiB)  # exactly 1 MiB is still small: fits in the rest
    assert allocator.segments() == [[(512, True), (KiB, True), (MiB, True), (MiB - 1536, False)]]
    allocator.malloc(3, MiB)  # the rest (1 MiB - 1.5 KiB) is too small: a second segment
    assert allocator.segments()[1] == [(MiB, True), (MiB, False)]
    assert allocator.reserved_bytes == 4 * MiB
    assert allocator.allocated_bytes == 512 + KiB + 2 * MiB


def test_a_large_block_is_split_then_merged_back_when_freed():
    """Large pool: `get_allocation_size` gives requests under 10 MiB (kMinLargeAlloc) a 20 MiB segment (kLargeBuffer);
    `should_split` splits a large block only when more than 1 MiB (kSmallSize) would remain, otherwise the whole block
    is handed out (and counted as allocated); `free_block`/`try_merge_blocks` merge a freed block with its free
    neighbours."""
    allocator = CachingAllocator()
    allocator.malloc(0, 3 * MiB)
    assert allocator.segments() == [[(3 * MiB, True), (17 * MiB, False)]]
    allocator.malloc(1, 5 * MiB)  # best fit: the 17 MiB rest, split again
    allocator.malloc(2, 11 * MiB + 512 * KiB)  # 12 MiB left: only 0.5 MiB would remain, so all 12 MiB are handed out
    assert allocator.segments() == [[(3 * MiB, True), (5 * MiB, True), (12 * MiB, True)]]
    assert allocator.allocated_bytes == 20 * MiB
    allocator.free(1)
    assert allocator.segments() == [[(3 * MiB, True), (5 * MiB, False), (12 * MiB, True)]]
    allocator.free(0)  # merges with the free block after it
    assert allocator.segments() == [[(8 * MiB, False), (12 * MiB, True)]]
    allocator.free(2)  # and the whole segment is one free block again, still reserved
    assert allocator.segments() == [[(20 * MiB, False)]]
    assert (allocator.allocated_bytes, allocator.reserved_bytes) == (0, 20 * MiB)


def test_large_requests_get_their_own_segment_rounded_up_to_2_mib():
    """`get_allocation_size`: from 10 MiB on, the segment is the request rounded up to 2 MiB (kRoundLarge); the
    1 MiB - 512 B left over is too small to split off (`should_split`), so the block is handed out whole."""
    allocator = CachingAllocator()
    allocator.malloc(0, 25 * MiB + 1)  # rounds to 25 MiB + 512 B; segment 26 MiB
    assert allocator.segments() == [[(26 * MiB, True)]]
    allocator.malloc(1, 10 * MiB)  # exactly kMinLargeAlloc: a 10 MiB segment of its own, not a 20 MiB one
    assert allocator.segments()[1] == [(10 * MiB, True)]
    assert allocator.reserved_bytes == allocator.allocated_bytes == 36 * MiB


def test_max_split_size_keeps_oversize_blocks_whole_and_for_oversize_requests():
    """`get_free_block` with max_split_size_mb: a request under it never takes a cached block of at least it; a
    request of at least it takes a cached block only if less than max_non_split_rounding (20 MiB) larger;
    `should_split` never splits for a request of at least max_split_size."""
    allocator = CachingAllocator(AllocatorConfig.parse("max_split_size_mb:20"))
    allocator.malloc(0, 40 * MiB)
    allocator.free(0)  # a cached 40 MiB segment
    allocator.malloc(1, 12 * MiB)  # under 20 MiB: may not take the 40 MiB block -> a new 12 MiB segment
    assert allocator.reserved_bytes == 52 * MiB
    allocator.malloc(2, 30 * MiB)  # oversize: 40 < 30 + 20, so the cached block serves it, whole
    assert allocator.segments() == [[(40 * MiB, True)], [(12 * MiB, True)]]
    allocator.free(2)
    allocator.malloc(3, 20 * MiB)  # oversize, but 40 >= 20 + 20: too wasteful -> a new 20 MiB segment
    assert allocator.reserved_bytes == 72 * MiB
    unlimited = CachingAllocator()  # without the setting, the 12 MiB request splits the cached 40 MiB block
    unlimited.malloc(0, 40 * MiB)
    unlimited.free(0)
    unlimited.malloc(1, 12 * MiB)
    assert unlimited.segments() == [[(12 * MiB, True), (28 * MiB, False)]]


def test_a_request_succeeds_only_after_the_cached_segments_are_released():
    """`malloc`'s retry path: when cudaMalloc has no room (`alloc_block` fails), `release_cached_blocks` returns every
    cached segment with nothing in use to the driver and `alloc_block` is tried again (`num_alloc_retries`)."""
    allocator = CachingAllocator(budget_bytes=40 * MiB)
    allocator.malloc(0, 20 * MiB)
    allocator.free(0)  # 20 MiB cached, unused
    allocator.malloc(1, 30 * MiB)  # 20 + 30 > 40: fails, releases the cached segment, then fits
    assert allocator.retries == 1
    assert allocator.segments() == [[(30 * MiB, True)]]
    assert allocator.reserved_bytes == 30 * MiB and allocator.peak_reserved_bytes == 30 * MiB


def test_a_partly_used_segment_cannot_be_released_and_the_request_runs_out_of_memory():
    """`release_blocks` frees only segments with no block in use (no prev/next split blocks): the free 17 MiB of a
    split 20 MiB segment stay reserved, so the retry fails too and malloc raises the out-of-memory error."""
    allocator = CachingAllocator(budget_bytes=40 * MiB)
    allocator.malloc(0, 3 * MiB)  # a 20 MiB segment: 3 MiB used, 17 MiB free
    with pytest.raises(OutOfMemory) as raised:
        allocator.malloc(1, 30 * MiB)
    assert (raised.value.requested, raised.value.rounded) == (30 * MiB, 30 * MiB)
    assert allocator.retries == 1 and allocator.reserved_bytes == 20 * MiB


def test_release_available_cached_blocks_frees_one_oversize_segment_before_releasing_everything():
    """With max_split_size_mb set, `release_available_cached_blocks` runs before `release_cached_blocks`: it frees
    the smallest cached oversize segment at least as large as the request, and the retry needs no full release (the
    cached small segment stays reserved)."""
    allocator = CachingAllocator(AllocatorConfig.parse("max_split_size_mb:20"), budget_bytes=100 * MiB)
    allocator.malloc(0, 1000)
    allocator.free(0)  # a cached 2 MiB small segment
    allocator.malloc(1, 95 * MiB)
    allocator.free(1)  # a cached 96 MiB oversize segment: 98 MiB reserved
    allocator.malloc(2, 70 * MiB)  # 96 >= 70 + 20: too large to serve it; 98 + 70 > 100: release the 96 MiB one
    assert allocator.retries == 0
    assert allocator.segments() == [[(2 * MiB, False)], [(70 * MiB, True)]]
    assert allocator.reserved_bytes == 72 * MiB


def test_expandable_segments_reserve_the_live_total_rounded_to_pages_on_a_growing_trace():
    """`expandable_segments:True` (`try_allocate_expandable_block`, `find_expandable_block`, `map_block`): one segment
    per pool grows page by page (2 MiB pages in the small pool, 20 MiB in the large pool) at its free end, and
    `should_split` splits whenever 512 B would remain; so with allocations only, reserved memory is each pool's live
    total rounded up to whole pages."""
    sizes = random.Random(0).choices([300, 4000, 700 * KiB, 3 * MiB, 7 * MiB, 12 * MiB + 100, 64 * MiB], k=300)
    allocator = CachingAllocator(AllocatorConfig.parse("expandable_segments:True"))
    small = large = 0
    for ident, size in enumerate(sizes):
        allocator.malloc(ident, size)
        rounded = allocator.round_size(size)
        if rounded <= MiB:
            small += rounded
        else:
            large += rounded
        assert allocator.reserved_bytes == -(-small // (2 * MiB)) * 2 * MiB + -(-large // (20 * MiB)) * 20 * MiB
    assert allocator.allocated_bytes == small + large
    assert len(allocator.segments()) == 2  # one per pool


def test_expandable_segments_unmap_whole_free_pages_when_releasing():
    """`release_blocks` with expandable segments: `unmap_block` returns every whole page inside a free block and
    keeps the partial pages at its ends mapped."""
    allocator = CachingAllocator(AllocatorConfig.parse("expandable_segments:True"))
    for ident in range(5):
        allocator.malloc(ident, 7 * MiB)  # 35 MiB used in 40 MiB (two 20 MiB pages)
    for ident in (2, 3, 4):
        allocator.free(ident)  # free from 14 MiB to the end (40 MiB)
    allocator._release_cached_blocks()
    assert allocator.segments() == [[(7 * MiB, True), (7 * MiB, True), (6 * MiB, False)]]
    assert allocator.reserved_bytes == 20 * MiB


def test_roundup_power2_divisions_round_requests_to_fractions_of_a_power_of_two():
    """`round_size` with roundup_power2_divisions: a request larger than 512 B x divisions rounds up to the next of
    `divisions` equal steps between the powers of two around it (`roundup_power2_next_division`; the source's own
    example: 1200 B in 4 divisions -> 1280 B); smaller ones keep 512 B rounding."""
    assert _roundup_power2_next_division(1200, 4) == 1280
    assert _roundup_power2_next_division(1024, 4) == 1024
    allocator = CachingAllocator(AllocatorConfig.parse("roundup_power2_divisions:4"))
    assert allocator.round_size(1200) == 1536  # 1200 <= 512 x 4: plain rounding
    assert allocator.round_size(300 * MiB) == 320 * MiB  # 256 MiB + k x 64 MiB
    assert allocator.round_size(257 * MiB) == 320 * MiB
    bounded = CachingAllocator(AllocatorConfig.parse("roundup_power2_divisions:[256:4,>:1]"))
    assert bounded.round_size(300 * MiB) == 320 * MiB and bounded.round_size(600 * MiB) == 600 * MiB


def test_best_fit_takes_the_smallest_sufficient_block_then_the_lowest_address():
    """`get_free_block`: `lower_bound` in a pool ordered by (size, address) (`BlockComparatorSize`)."""
    allocator = CachingAllocator()
    for ident, size in enumerate((12, 14, 12, 16)):
        allocator.malloc(ident, size * MiB)  # four segments of their own
    for ident in (1, 2, 3, 0):
        allocator.free(ident)
    allocator.malloc(10, 11 * MiB)  # both 12 MiB blocks fit best; the first segment (lowest address) is taken
    assert [segment[0][1] for segment in allocator.segments()] == [True, False, False, False]
    allocator.malloc(11, 13 * MiB)  # the 14 MiB block, not the 16 MiB one
    assert [segment[0][1] for segment in allocator.segments()] == [True, True, False, False]


def test_a_snapshot_goes_on_independently_under_another_budget():
    allocator = CachingAllocator()
    allocator.malloc(0, 20 * MiB)
    allocator.free(0)
    snapshot = allocator.copy(budget_bytes=40 * MiB)
    snapshot.malloc(1, 30 * MiB)  # releases the cached segment in the snapshot only
    allocator.malloc(1, 30 * MiB)
    assert (snapshot.reserved_bytes, snapshot.retries) == (30 * MiB, 1)
    assert (allocator.reserved_bytes, allocator.retries) == (50 * MiB, 0)
