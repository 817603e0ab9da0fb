"""A cache of FakeTensorMode's answers, so a replay pays FakeTensorMode's per-op cost once per distinct op.

A training step repeats the same ops on the same shapes many times (32 identical ViT blocks, one mask decoder per
image, one AdamW update per parameter group). `FakeTensorMode` works out each op's output metadata afresh (its own
cache still costs ~0.5 ms an op in Python). `FakeOpCache` runs ops for the mode above FakeTensorMode (the
`MemoryTracker`, as its `run_op`: one dispatch layer instead of two) and remembers, per op and input metadata
(shape, stride, storage offset, dtype, device of every tensor argument, and every non-tensor argument), what
FakeTensorMode returned, in terms that can be replayed without it:

* a fresh tensor with a given size, stride, dtype and device (a new storage, exactly as big as a fresh allocation);
* one of the input tensors itself (in-place ops, `out=` ops);
* a view of an input tensor's storage with a given size, stride and offset (same dtype);
* None.

Anything else (non-tensor results, tensors carrying a FakeTensorMode constant, results that alias each other, ops
that change an input's metadata, outputs whose storage is not a plain fresh allocation) is never cached: that op and
argument combination goes to FakeTensorMode every time. Memory accounting only sees sizes, aliasing and lifetimes,
and those are reproduced exactly; tests compare cached and uncached replays byte for byte.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._pytree import tree_leaves

_PRIM_DEVICE = torch.ops.prim.device.default
_LOCAL_SCALAR_DENSE = torch.ops.aten._local_scalar_dense.default
_NO_PYTHON_DISPATCH = torch._C.DispatchKeySet(torch._C.DispatchKey.Python)
_PLAIN = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)
_UNCACHEABLE = object()


class _Uncacheable(Exception):
    pass


class FakeOpCache:
    """Runs an op, from FakeTensorMode's earlier answer when it has one. Call it from a dispatch mode that sits
    directly above `fake_mode`: `cache(func, args, kwargs)` instead of `func(*args, **kwargs)`.

    `entries` may be shared between instances (and fake modes): it holds metadata only.
    """

    def __init__(self, fake_mode: FakeTensorMode, entries: dict | None = None) -> None:
        self.fake_mode = fake_mode
        self.entries: dict = {} if entries is None else entries
        self.hits = 0
        self.misses = 0
        self._attributes: dict[torch.device, dict] = {}  # per device: what FakeTensor.__new__ sets on a new fake
        self._value_blind = _VoidOps()  # ops whose float arguments are keyed by type, not value

    def __call__(self, func, args: tuple, kwargs: dict):
        if func is _PRIM_DEVICE:
            tensor = args[0]
            if isinstance(tensor, FakeTensor) and not self.fake_mode.in_kernel_invocation:
                return tensor.fake_device
            return func(*args, **kwargs)
        if func is _LOCAL_SCALAR_DENSE:
            tensor = args[0]
            if type(tensor) is FakeTensor and tensor.fake_mode is self.fake_mode and tensor.constant is not None:
                # `.item()` of a tensor FakeTensorMode holds a constant for (AdamW's host-side `step` counters, read
                # once per parameter per step): FakeTensorMode's own answer is the op run on that constant, with
                # dispatch off; it returns a number, so there is nothing to cache or count.
                with torch._C._DisableTorchDispatch():
                    return func(tensor.constant)
        try:
            if func in self._value_blind:
                key = (func, self._blind_key(args), self._blind_key(kwargs))
            else:  # no keyword arguments is the common case: () is what _key gives for {}
                key = (func, self._key(args), self._key(kwargs) if kwargs else ())
        except _Uncacheable:
            return func(*args, **kwargs)
        entry = self.entries.get(key)
        if entry is _UNCACHEABLE:
            return func(*args, **kwargs)
        if entry is not None:
            self.hits += 1
            return self._replay(entry, args, kwargs)
        self.misses += 1
        before = _metadata_of_tensors(args, kwargs)
        out = func(*args, **kwargs)
        try:
            if _metadata_of_tensors(args, kwargs) != before:
                raise _Uncacheable  # e.g. t_(), resize_(): the op changed an input's metadata
            self.entries[key] = self._describe(out, args, kwargs)
        except _Uncacheable:
            self.entries[key] = _UNCACHEABLE
        return out

    # -- keys -------------------------------------------------------------------------------------------------
    def _key(self, value: Any) -> Any:
        kind = type(value)
        if kind is FakeTensor:
            if value.fake_mode is not self.fake_mode or value.constant is not None:
                raise _Uncacheable
            return (value.shape, value.stride(), value.storage_offset(), value.dtype, value.fake_device)
        if kind in _PLAIN:
            return value
        if kind is tuple or kind is list:
            return (kind, tuple([self._key(item) for item in value]))
        if kind is dict:
            return tuple([(name, self._key(item)) for name, item in value.items()])
        if isinstance(value, torch.Tensor):
            raise _Uncacheable  # a real tensor (or another subclass): FakeTensorMode decides what to do with it
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, (list, tuple)):  # e.g. torch.Size
            return (tuple, tuple([self._key(item) for item in value]))
        raise _Uncacheable

    def _blind_key(self, value: Any) -> Any:
        """As _key, with floats (AdamW's per-step bias corrections) standing for any float."""
        if type(value) is float:
            return float
        if type(value) is list or type(value) is tuple:
            return (type(value), tuple([self._blind_key(item) for item in value]))
        if type(value) is dict:
            return tuple([(name, self._blind_key(item)) for name, item in value.items()])
        return self._key(value)

    # -- describing an answer ---------------------------------------------------------------------------------
    def _describe(self, out: Any, args: tuple, kwargs: dict) -> tuple:
        inputs = _tensor_paths(args, kwargs)
        if out is None:
            return ("none",)
        # storages of every input, however deeply nested: a fresh output may not be one of them
        seen = {id(leaf.untyped_storage()) for leaf in tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)}
        if isinstance(out, torch.Tensor):
            return ("one", self._describe_tensor(out, inputs, seen))
        if isinstance(out, (tuple, list)):
            parts = tuple(None if item is None else self._describe_tensor(item, inputs, seen) for item in out)
            return ("tuple" if isinstance(out, tuple) else "list", parts)
        raise _Uncacheable

    def _describe_tensor(self, tensor: torch.Tensor, inputs: list, seen: set[int]) -> tuple:
        if not isinstance(tensor, FakeTensor) or tensor.fake_mode is not self.fake_mode or tensor.constant is not None:
            raise _Uncacheable
        for path, source in inputs:
            if tensor is source:
                return ("arg", path)
        storage = tensor.untyped_storage()
        shape = (tuple(tensor.shape), tensor.stride())
        for path, source in inputs:
            if source.untyped_storage() is storage:
                if tensor.dtype != source.dtype or tensor.fake_device != source.fake_device:
                    raise _Uncacheable
                return ("view", path, *shape, tensor.storage_offset())
        if id(storage) in seen:
            raise _Uncacheable  # shares a storage with another output or with an input we cannot point to
        seen.add(id(storage))
        fresh = _meta_empty(*shape, tensor.dtype)
        if tensor.storage_offset() != 0 or storage.nbytes() != fresh.untyped_storage().nbytes():
            raise _Uncacheable
        return ("new", *shape, tensor.dtype, tensor.fake_device)

    # -- replaying an answer ----------------------------------------------------------------------------------
    def _replay(self, entry: tuple, args: tuple, kwargs: dict) -> Any:
        kind = entry[0]
        if kind == "none":
            return None
        if kind == "one":
            return self._make(entry[1], args, kwargs)
        made = [None if part is None else self._make(part, args, kwargs) for part in entry[1]]
        return tuple(made) if kind == "tuple" else made

    def _make(self, part: tuple, args: tuple, kwargs: dict) -> torch.Tensor:
        kind = part[0]
        if kind == "arg":
            return _at(part[1], args, kwargs)
        if kind == "new":
            _, size, stride, dtype, device = part
            return self._wrap(_meta_empty(size, stride, dtype), device)
        _, path, size, stride, offset = part
        source = _at(path, args, kwargs)
        with torch._C._ExcludeDispatchKeyGuard(_NO_PYTHON_DISPATCH):
            view = torch.empty(0, dtype=source.dtype, device="meta")
            view.set_(source.untyped_storage(), offset, size, stride)
        return self._wrap(view, source.fake_device)

    def _wrap(self, elem: torch.Tensor, device: torch.device) -> FakeTensor:
        """`FakeTensor(fake_mode, elem, device)`, made faster by copying the attributes a first one was given."""
        attributes = self._attributes.get(device)
        if attributes is None:
            attributes = self._attributes[device] = dict(vars(FakeTensor(self.fake_mode, elem, device)))
        fake = torch.Tensor._make_subclass(FakeTensor, elem, False, dispatch_device=True,
                                           device_for_backend_keys=device)
        if not self.fake_mode._allow_unsafe_data_ptr_access:
            torch._C._set_throw_on_mutable_data_ptr(fake)
        vars(fake).update(attributes)
        return fake


class _VoidOps(dict):
    """`func in ops`: whether `func` returns nothing. Such an op only updates its inputs' values in place, so no float
    argument can change what it does to memory (checked on the first call: it may not change any metadata)."""

    def __missing__(self, func) -> bool:
        self[func] = len(func._schema.returns) == 0
        return self[func]

    def __contains__(self, func) -> bool:
        return self[func]


def _meta_empty(size: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
    with torch._C._ExcludeDispatchKeyGuard(_NO_PYTHON_DISPATCH):
        return torch.empty_strided(size, stride, dtype=dtype, device="meta")


def _tensor_paths(args: tuple, kwargs: dict) -> list[tuple[tuple, torch.Tensor]]:
    """(path, tensor) for tensors among the arguments, top level or inside a top-level list."""
    found = []
    for place, values in (("args", enumerate(args)), ("kwargs", kwargs.items())):
        for name, value in values:
            if isinstance(value, torch.Tensor):
                found.append(((place, name), value))
            elif isinstance(value, (list, tuple)):
                found.extend(((place, name, index), item) for index, item in enumerate(value)
                             if isinstance(item, torch.Tensor))
    return found


def _at(path: tuple, args: tuple, kwargs: dict) -> torch.Tensor:
    value = (args if path[0] == "args" else kwargs)[path[1]]
    return value[path[2]] if len(path) == 3 else value


def _metadata_of_tensors(args: tuple, kwargs: dict) -> list:
    return [(path, tuple(t.shape), t.stride(), t.storage_offset(), t.dtype) for path, t in _tensor_paths(args, kwargs)]
