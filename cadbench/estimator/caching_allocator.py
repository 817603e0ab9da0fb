"""A simulation of PyTorch's CUDA caching allocator: which segments a sequence of allocations and frees reserves.

`max_memory_allocated` counts the blocks handed out; a run fails when the allocator cannot find or create a block
for a request, which depends on `max_memory_reserved`: the segments it obtained from the driver (cudaMalloc, or
mapped pages with expandable segments), fragmentation inside them included. This class replays an allocation trace
(`AllocationTrace`: request sizes before rounding, stream) through the allocator's algorithm, read from
`c10/cuda/CUDACachingAllocator.cpp` (`DeviceCachingAllocator`) of pytorch/pytorch, with the settings of
`cadbench.estimator.alloc_conf` (read from `c10/core/AllocatorConfig.{h,cpp}`). The source read is the file at commit
001074d25084 (the version at hand; the installed torch 2.14.1, commit 5c4886908584, was not), checked against the
installed wheel's own c10 headers (`AllocatorConfig.h`: the size constants, `large_segment_size`,
`max_non_split_rounding_size`; `CUDAAllocatorConfig.h`). What is modelled, function by function:

* `round_size`: requests below 512 B take 512 B; others round up to 512 B, or, when `roundup_power2_divisions` gives
  more than one division for the size and the size exceeds 512 B x divisions, to the next of `divisions` equal steps
  between two powers of two (`roundup_power2_next_division`).
* `get_pool`: rounded sizes up to 1 MiB (kSmallSize) go to the small pool, larger ones to the large pool; pools are
  kept per stream (blocks are only reused on their own stream).
* `get_allocation_size`: a new segment is 2 MiB for the small pool (kSmallBuffer); 20 MiB (kLargeBuffer, or
  `large_segment_size_mb`) for large requests under 10 MiB (kMinLargeAlloc); the request rounded up to 2 MiB
  (kRoundLarge) above that.
* `get_free_block`: best fit, the smallest cached block of the pool and stream that is large enough (ties: lowest
  address, as `BlockComparatorSize` orders them); a request under `max_split_size` never takes a block of at least
  `max_split_size`, and a request of at least `max_split_size` only takes a block less than
  `max_non_split_rounding` (20 MiB) larger than itself. With expandable segments, a block at the end of a segment
  counts with the unmapped space behind it, and the search moves on to larger blocks that expand less.
* `should_split` / `alloc_found_block`: the block is split, the request taking its front, when the rest is at
  least 512 B in the small pool or with expandable segments, and, in the large pool, when the request is under
  `max_split_size` and the rest exceeds 1 MiB. Otherwise the whole block is handed out (and counted as allocated).
* `malloc`'s path when no cached block fits: `alloc_block` (cudaMalloc of the allocation size); if the driver has
  no room, `release_available_cached_blocks` (only with `max_split_size_mb` set: free cached oversize segments, the
  smallest sufficient one, else the largest first until enough) and retry; then `release_cached_blocks` (every
  cached segment with no block in use, both pools; with expandable segments, every fully free page) and retry once
  more; then out of memory.
* `free` / `free_block` / `try_merge_blocks`: a freed block merges with free neighbours of its segment and goes back
  to its pool's cache; segments are never returned to the driver except by the release steps above.
* `expandable_segments:True` (`try_allocate_expandable_block`, `find_expandable_block`, `map_block`,
  `unmap_block`, `release_blocks`): one growing segment per pool and stream whose pages (2 MiB in the small pool,
  the large segment size in the large pool) are mapped on demand at the lowest address that fits, merged with the
  free block before them; releasing unmaps every whole free page.

Not modelled, as a single-stream training step does not use them: CUDA graph private pools, streams other than the
allocating one (`recordStream`, events), the free-memory callbacks, IPC; nor the garbage collector and the
per-process memory fraction (`alloc_conf` marks those settings as not simulated, and no figure is given under them).
Addresses are a model: new segments get increasing addresses, which only decides ties between equal-size cached
blocks; the virtual address space of an expandable segment (1.125 x the card's memory) is treated as unbounded.
The driver is modelled as handing out any amount up to `budget_bytes` (the card's memory minus what lies outside
the allocator, such as the CUDA context) in whole segments or pages; a real driver may refuse a little earlier (its
own fragmentation and reservations).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Callable

from cadbench.estimator.alloc_conf import AllocatorConfig

MIN_BLOCK_SIZE = 512  # kMinBlockSize
SMALL_SIZE = 1 << 20  # kSmallSize: the largest small-pool request
SMALL_BUFFER = 2 << 20  # kSmallBuffer: a small-pool segment (and an expandable small-pool page)
MIN_LARGE_ALLOC = 10 << 20  # kMinLargeAlloc: below this, a large request gets a large segment to split
ROUND_LARGE = 2 << 20  # kRoundLarge: larger requests get a segment of their size rounded to this
_UNLIMITED = 2**64 - 1
_ADDRESS_BITS = 52  # a cached block's sort key is size << _ADDRESS_BITS | address: best fit, then lowest address
_EXPANDABLE_ADDRESS_SPACE = 1 << 44  # virtual address space of one expandable segment: far beyond any card
_NONE = -1  # no block: the neighbour of a segment's first or last block
_ALLOCATED, _UNMAPPED = 1, 2  # bits of a block's state; 0 is a cached (free), mapped block


class OutOfMemory(Exception):
    """The simulated allocator could not serve a request even after freeing its cache."""

    def __init__(self, event: int, requested: int, rounded: int) -> None:
        super().__init__(f"out of memory at event {event}: {requested} bytes requested ({rounded} rounded)")
        self.event, self.requested, self.rounded = event, requested, rounded


class _Pool:
    """The cached blocks of one pool (small or large) and one stream, in best-fit order (`BlockPool`)."""

    __slots__ = ("small", "keys", "blocks", "unmapped")

    def __init__(self, small: bool) -> None:
        self.small = small
        self.keys: list[int] = []  # sorted size << _ADDRESS_BITS | address of every cached mapped block
        self.blocks: dict[int, int] = {}  # key -> block
        self.unmapped: dict[int, int] = {}  # address -> unmapped block of an expandable segment

    def copy(self) -> "_Pool":
        other = _Pool(self.small)
        other.keys, other.blocks, other.unmapped = self.keys.copy(), self.blocks.copy(), self.unmapped.copy()
        return other


class CachingAllocator:
    """The allocator's state over one run: `malloc(ident, nbytes)` and `free(ident)` in the trace's order.

    `budget_bytes` is what the driver can give the allocator (None: unlimited). `malloc` raises `OutOfMemory` when
    a request cannot be served after the release-and-retry path. `reserved_bytes`/`allocated_bytes` are the current
    totals, `peak_*` their maxima since `reset_peak()` (as after `torch.cuda.reset_peak_memory_stats`).
    `on_segment`, if set, is called with the total the driver would then hold before each request to it (a new
    segment, or pages to map). `copy(budget)` is a snapshot that goes on independently.

    A block is a number indexing parallel lists (size, address, neighbours in its segment, state, pool, expandable
    segment), so that a snapshot is a few list copies; numbers of merged-away blocks are reused.
    """

    def __init__(self, config: AllocatorConfig | None = None, budget_bytes: int | None = None) -> None:
        self.config = config or AllocatorConfig()
        self.budget = _UNLIMITED if budget_bytes is None else budget_bytes
        self.reserved_bytes = self.allocated_bytes = 0
        self.peak_reserved_bytes = self.peak_allocated_bytes = 0
        self.segments_allocated = 0  # cudaMalloc calls (or page mappings with expandable segments)
        self.retries = 0  # times the whole cache was released to retry a request (`num_alloc_retries`)
        self.events = 0  # mallocs and frees so far
        self.on_segment: Callable[[int], None] | None = None
        self._size: list[int] = []
        self._address: list[int] = []
        self._prev: list[int] = []
        self._next: list[int] = []
        self._state: list[int] = []
        self._pool_of: list[int] = []
        self._segment: list[int] = []  # index into _segments (expandable segments only), else _NONE
        self._spare: list[int] = []  # block numbers free for reuse
        self._segments: list[tuple[int, int]] = []  # expandable segments: (base address, page size)
        self._pools: list[_Pool] = []
        self._pool_index: dict[int, int] = {}  # stream * 2 + small -> index into _pools
        self._live: dict[int, int] = {}  # ident -> its block
        self._next_address = 1 << 32
        self._expandable = self.config.expandable_segments
        self._max_split = self.config.max_split_size
        self._non_split_rounding = self.config.max_non_split_rounding
        self._rounding = any(d > 1 for d in self.config.roundup_power2_divisions)

    def copy(self, budget_bytes: int | None = None) -> "CachingAllocator":
        """A snapshot of this state that goes on independently, with `budget_bytes` as its driver's limit."""
        other = object.__new__(CachingAllocator)
        other.__dict__.update(self.__dict__)
        for name in ("_size", "_address", "_prev", "_next", "_state", "_pool_of", "_segment", "_spare",
                     "_segments", "_live", "_pool_index"):
            setattr(other, name, getattr(self, name).copy())
        other._pools = [pool.copy() for pool in self._pools]
        other.budget = _UNLIMITED if budget_bytes is None else budget_bytes
        other.on_segment = None
        return other

    # -- the two calls of a trace -------------------------------------------------------------------------------
    def malloc(self, ident: int, nbytes: int, stream: int = 0) -> None:
        self.events += 1
        if nbytes < MIN_BLOCK_SIZE:
            size = MIN_BLOCK_SIZE
        elif self._rounding:
            size = self.round_size(nbytes)
        else:
            size = (nbytes + MIN_BLOCK_SIZE - 1) & -MIN_BLOCK_SIZE
        small = size <= SMALL_SIZE
        number = self._pool_index.get(stream * 2 + small)
        if number is None:
            number = self._pool_index[stream * 2 + small] = len(self._pools)
            self._pools.append(_Pool(small))
        pool = self._pools[number]
        sizes, keys = self._size, pool.keys
        # get_free_block, inlined for the common case (see _get_free_block)
        index = bisect_left(keys, size << _ADDRESS_BITS)
        block = _NONE
        if index < len(keys):
            if self._expandable:
                block = self._get_free_block(pool, size)
            else:
                key = keys[index]
                found = pool.blocks[key]
                limit = self._max_split
                if size < limit <= sizes[found] or size >= limit and sizes[found] >= size + self._non_split_rounding:
                    pass  # an oversize block for a request that may split, or much too large: none may serve
                else:
                    del keys[index]
                    del pool.blocks[key]
                    block = found
        if block == _NONE:
            block = self._alloc_block(number, size)
            if block == _NONE:
                if self._release_available_cached_blocks(pool, size):
                    block = self._alloc_block(number, size)
                if block == _NONE:
                    self.retries += 1
                    self._release_cached_blocks()
                    block = self._alloc_block(number, size)
                    if block == _NONE:
                        raise OutOfMemory(self.events, nbytes, size)
        remaining = sizes[block] - size
        if (remaining >= MIN_BLOCK_SIZE if (small or self._expandable)
                else size < self._max_split and remaining > SMALL_SIZE):  # should_split: the request takes the front
            addresses, prev = self._address, self._prev
            address = addresses[block]
            front = self._new_block(size, address, number, 0, self._segment[block])
            previous = prev[block]
            prev[front], self._next[front] = previous, block
            if previous != _NONE:
                self._next[previous] = front
            prev[block] = front
            address += size
            addresses[block] = address
            sizes[block] = remaining
            key = remaining << _ADDRESS_BITS | address
            insort(keys, key)
            pool.blocks[key] = block
            block = front
        self._state[block] = _ALLOCATED
        self._live[ident] = block
        self.allocated_bytes += sizes[block]
        if self.allocated_bytes > self.peak_allocated_bytes:
            self.peak_allocated_bytes = self.allocated_bytes

    def free(self, ident: int) -> None:
        """`free_block`: the block merges with the cached neighbours of its segment and goes back to its pool."""
        self.events += 1
        block = self._live.pop(ident)
        state, sizes, addresses, prev, next_ = self._state, self._size, self._address, self._prev, self._next
        state[block] = 0
        size = sizes[block]
        self.allocated_bytes -= size
        pool = self._pools[self._pool_of[block]]
        keys, cached = pool.keys, pool.blocks
        previous = prev[block]
        if previous != _NONE and state[previous] == 0:  # try_merge_blocks: a cached, mapped neighbour before it
            key = sizes[previous] << _ADDRESS_BITS | addresses[previous]
            del keys[bisect_left(keys, key)]
            del cached[key]
            size += sizes[previous]
            addresses[block] = addresses[previous]
            before = prev[block] = prev[previous]
            if before != _NONE:
                next_[before] = block
            self._spare.append(previous)
        following = next_[block]
        if following != _NONE and state[following] == 0:  # ... and after it
            key = sizes[following] << _ADDRESS_BITS | addresses[following]
            del keys[bisect_left(keys, key)]
            del cached[key]
            size += sizes[following]
            after = next_[block] = next_[following]
            if after != _NONE:
                prev[after] = block
            self._spare.append(following)
        sizes[block] = size
        key = size << _ADDRESS_BITS | addresses[block]
        insort(keys, key)
        cached[key] = block

    def reset_peak(self) -> None:
        self.peak_reserved_bytes, self.peak_allocated_bytes = self.reserved_bytes, self.allocated_bytes

    # -- sizes --------------------------------------------------------------------------------------------------
    def round_size(self, nbytes: int) -> int:
        """`round_size`: what a request of `nbytes` takes from a block."""
        if nbytes < MIN_BLOCK_SIZE:
            return MIN_BLOCK_SIZE
        if self._rounding:
            divisions = self.config.divisions_for(nbytes)
            if divisions > 1 and nbytes > MIN_BLOCK_SIZE * divisions:
                return _roundup_power2_next_division(nbytes, divisions)
        return -(-nbytes // MIN_BLOCK_SIZE) * MIN_BLOCK_SIZE

    def allocation_size(self, size: int) -> int:
        """`get_allocation_size`: the segment cudaMalloc'ed for a rounded request no cached block serves."""
        if size <= SMALL_SIZE:
            return SMALL_BUFFER
        if size < MIN_LARGE_ALLOC:
            return self.config.large_segment_size
        return -(-size // ROUND_LARGE) * ROUND_LARGE

    # -- finding and making blocks ------------------------------------------------------------------------------
    def _get_free_block(self, pool: _Pool, size: int) -> int:
        """`get_free_block`: the best-fitting cached block, taken out of its pool; _NONE if none may serve."""
        keys = pool.keys
        index = bisect_left(keys, size << _ADDRESS_BITS)
        if index == len(keys):
            return _NONE
        block = pool.blocks[keys[index]]
        if self._segment[block] != _NONE:  # a segment's tail counts with the unmapped space behind it
            grows = self._expandable_size(block)
            for following in range(index + 1, len(keys)):
                candidate = pool.blocks[keys[following]]
                candidate_grows = self._expandable_size(candidate)
                if candidate_grows >= grows:
                    break
                block, grows, index = candidate, candidate_grows, following
        found = self._size[block]
        if size < self._max_split and found >= self._max_split:
            return _NONE  # no oversize block for a request that may split
        if size >= self._max_split and found >= size + self._non_split_rounding:
            return _NONE  # an oversize request only takes a block a little larger than itself
        del pool.blocks[keys[index]]
        del keys[index]
        return block

    def _alloc_block(self, pool_number: int, size: int) -> int:
        """`alloc_block`: a new segment for the request; _NONE when the driver has no room."""
        if self._expandable:
            return self._try_allocate_expandable_block(pool_number, size)
        allocation = self.allocation_size(size)
        if self.on_segment is not None:
            self.on_segment(self.reserved_bytes + allocation)
        if self.reserved_bytes + allocation > self.budget:
            return _NONE
        block = self._new_block(allocation, self._next_address, pool_number, 0, _NONE)
        self._next_address += allocation
        self._add_reserved(allocation)
        return block

    def _add_reserved(self, nbytes: int) -> None:
        self.segments_allocated += 1
        self.reserved_bytes += nbytes
        if self.reserved_bytes > self.peak_reserved_bytes:
            self.peak_reserved_bytes = self.reserved_bytes

    # -- giving memory back -------------------------------------------------------------------------------------
    def _release_available_cached_blocks(self, pool: _Pool, size: int) -> bool:
        """Free cached oversize segments (>= max_split_size) until one request's worth is back with the driver."""
        if self._max_split == _UNLIMITED or self._expandable:
            # With expandable segments PyTorch reaches an internal assert here (release_block refuses expandable
            # blocks); the simulation releases nothing at this step.
            return False
        target = max(size, self._max_split)
        keys = pool.keys
        index = bisect_left(keys, target << _ADDRESS_BITS)
        if index < len(keys):
            return self._release_block(pool, pool.blocks[keys[index]])
        released = 0
        index -= 1
        while index >= 0 and released < target:
            block = pool.blocks[keys[index]]
            if self._size[block] < self._max_split:
                break
            released += self._size[block] if self._release_block(pool, block) else 0
            index -= 1
        return released >= target

    def _release_cached_blocks(self) -> None:
        """`release_cached_blocks`: every cached segment with nothing in use goes back, large pools first."""
        for number in sorted(range(len(self._pools)), key=lambda n: self._pools[n].small):
            pool = self._pools[number]
            to_unmap = []
            for key in list(pool.keys):
                block = pool.blocks[key]
                if self._segment[block] != _NONE:
                    to_unmap.append(block)
                elif self._prev[block] == _NONE and self._next[block] == _NONE:
                    self._release_block(pool, block)
            for block in to_unmap:
                self._unmap_block(pool, block)
                if self._state[block] == _UNMAPPED and self._prev[block] == _NONE and self._next[block] == _NONE:
                    del pool.unmapped[self._address[block]]  # release_expandable_segment: nothing left mapped
                    self._spare.append(block)

    def _release_block(self, pool: _Pool, block: int) -> bool:
        """`release_block` (cudaFree of a whole cached segment); a piece of a segment cannot be freed alone."""
        if self._prev[block] != _NONE or self._next[block] != _NONE:
            return False
        self._unlist(pool, block)
        self.reserved_bytes -= self._size[block]
        self._spare.append(block)
        return True

    # -- expandable segments ------------------------------------------------------------------------------------
    def _try_allocate_expandable_block(self, pool_number: int, size: int) -> int:
        pool = self._pools[pool_number]
        candidate = self._find_expandable_block(pool_number, size)
        if self._state[candidate] == _UNMAPPED:
            if not self._map_block(pool, candidate, min(self._size[candidate], size)):
                return _NONE
        while self._size[candidate] < size:  # a cached block followed by unmapped space: map more behind it
            following = self._next[candidate]
            if not self._map_block(pool, following, min(size - self._size[candidate], self._size[following])):
                return _NONE
            candidate = following  # map_block merged the cached block before it into it
        self._unlist(pool, candidate)
        return candidate

    def _find_expandable_block(self, pool_number: int, size: int) -> int:
        """The lowest address where cached and unmapped space together fit `size`; else a new segment."""
        pool = self._pools[pool_number]
        for address in sorted(pool.unmapped):
            start = pool.unmapped[address]
            before = self._prev[start]
            if before != _NONE and not self._state[before] & _ALLOCATED:
                start = before
            room, block = 0, start
            while room < size and block != _NONE and not self._state[block] & _ALLOCATED:
                room += self._size[block]
                block = self._next[block]
            if room >= size:
                return start
        page = SMALL_BUFFER if pool.small else self.config.large_segment_size
        self._segments.append((self._next_address, page))
        block = self._new_block(_EXPANDABLE_ADDRESS_SPACE, self._next_address, pool_number, _UNMAPPED,
                                len(self._segments) - 1)
        self._next_address += _EXPANDABLE_ADDRESS_SPACE
        pool.unmapped[self._address[block]] = block
        return block

    def _map_block(self, pool: _Pool, block: int, size: int) -> bool:
        """`map_block`: back the front of an unmapped block with enough whole pages for `size` bytes."""
        page = self._segments[self._segment[block]][1]
        mapped = -(-size // page) * page
        if self.on_segment is not None:
            self.on_segment(self.reserved_bytes + mapped)
        if self.reserved_bytes + mapped > self.budget:
            return False
        address = self._address[block]
        del pool.unmapped[address]
        self._state[block] = 0
        if mapped < self._size[block]:
            rest = self._new_block(self._size[block] - mapped, address + mapped, self._pool_of[block], _UNMAPPED,
                                   self._segment[block])
            self._splice(rest, block, self._next[block])
            pool.unmapped[address + mapped] = rest
            self._size[block] = mapped
        self._merge(pool, block, self._prev[block])
        self._merge(pool, block, self._next[block])
        self._list(pool, block)
        self._add_reserved(mapped)
        return True

    def _unmap_block(self, pool: _Pool, block: int) -> None:
        """`unmap_block`: give back every whole page inside a cached block; partial pages stay cached."""
        base, page = self._segments[self._segment[block]]
        address, size = self._address[block], self._size[block]
        begin = base + -(-(address - base) // page) * page
        end = base + (address + size - base) // page * page
        if begin >= end:
            return
        self._unlist(pool, block)
        number, segment = self._pool_of[block], self._segment[block]
        if begin > address:
            before = self._new_block(begin - address, address, number, 0, segment)
            self._splice(before, self._prev[block], block)
            self._list(pool, before)
        if address + size > end:
            after = self._new_block(address + size - end, end, number, 0, segment)
            self._splice(after, block, self._next[block])
            self._list(pool, after)
        self._address[block], self._size[block], self._state[block] = begin, end - begin, _UNMAPPED
        self._merge(pool, block, self._prev[block])
        self._merge(pool, block, self._next[block])
        pool.unmapped[self._address[block]] = block
        self.reserved_bytes -= end - begin

    def _expandable_size(self, block: int) -> int:
        following = self._next[block]
        if following != _NONE and self._state[following] == _UNMAPPED:
            return self._size[block] + self._size[following]
        return self._size[block]

    # -- blocks -------------------------------------------------------------------------------------------------
    def _new_block(self, size: int, address: int, pool_number: int, state: int, segment: int) -> int:
        if self._spare:
            block = self._spare.pop()
            self._size[block], self._address[block], self._state[block] = size, address, state
            self._prev[block] = self._next[block] = _NONE
            self._pool_of[block], self._segment[block] = pool_number, segment
            return block
        self._size.append(size)
        self._address.append(address)
        self._prev.append(_NONE)
        self._next.append(_NONE)
        self._state.append(state)
        self._pool_of.append(pool_number)
        self._segment.append(segment)
        return len(self._size) - 1

    def _list(self, pool: _Pool, block: int) -> None:
        key = self._size[block] << _ADDRESS_BITS | self._address[block]
        insort(pool.keys, key)
        pool.blocks[key] = block

    def _unlist(self, pool: _Pool, block: int) -> None:
        key = self._size[block] << _ADDRESS_BITS | self._address[block]
        del pool.keys[bisect_left(pool.keys, key)]
        del pool.blocks[key]

    def _splice(self, block: int, before: int, after: int) -> None:
        """Put `block` between two neighbours of a segment (`Block::splice`)."""
        if before != _NONE:
            self._next[before] = block
        self._prev[block] = before
        if after != _NONE:
            self._prev[after] = block
        self._next[block] = after

    def _merge(self, pool: _Pool, block: int, neighbour: int) -> None:
        """`try_merge_blocks`: absorb a cached neighbour in the same mapped state into `block` (in no pool now)."""
        if neighbour == _NONE or self._state[neighbour] != self._state[block] or self._state[block] & _ALLOCATED:
            return
        if self._state[neighbour] == _UNMAPPED:
            del pool.unmapped[self._address[neighbour]]
        else:
            self._unlist(pool, neighbour)
        if self._prev[block] == neighbour:
            self._address[block] = self._address[neighbour]
            before = self._prev[block] = self._prev[neighbour]
            if before != _NONE:
                self._next[before] = block
        else:
            after = self._next[block] = self._next[neighbour]
            if after != _NONE:
                self._prev[after] = block
        self._size[block] += self._size[neighbour]
        self._spare.append(neighbour)

    # -- inspection (tests) -------------------------------------------------------------------------------------
    def segments(self) -> list[list[tuple[int, bool]]]:
        """Every mapped stretch of every segment, in address order, as [(block size, allocated), ...]."""
        blocks = [*self._live.values()]
        for pool in self._pools:
            blocks += pool.blocks.values()
        starts = sorted((b for b in blocks if self._prev[b] == _NONE or self._state[self._prev[b]] == _UNMAPPED),
                        key=self._address.__getitem__)
        layout = []
        for block in starts:
            stretch = []
            while block != _NONE and self._state[block] != _UNMAPPED:
                stretch.append((self._size[block], bool(self._state[block] & _ALLOCATED)))
                block = self._next[block]
            layout.append(stretch)
        return layout


def _roundup_power2_next_division(size: int, divisions: int) -> int:
    """`roundup_power2_next_division`: the next of `divisions` equal steps between the powers of two around size."""
    if size & (size - 1) == 0:
        return size
    floor = 1 << (size.bit_length() - 1)
    step = floor >> (divisions.bit_length() - 1)
    if step == 0:
        return floor << 1
    rounded = size & ~(step - 1)
    return size if rounded == size else rounded + step
