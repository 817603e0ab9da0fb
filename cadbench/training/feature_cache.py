"""Frozen image features computed once per image during a fine-tune, as MedSAM's training precomputes its image
embeddings.

A method whose image encoder runs under `no_grad` (`Method.encoder_under_no_grad`: decoder_only, cad) splits its
embeddings into `frozen_features(images)`, which depends on each image alone, and what trains on top. When the
fine-tune shows the model the same images again (no augmentation), those features are the same every epoch, so
`FrozenFeatureCache` computes each image's once and serves it afterwards: on a CPU the frozen encoder is most of a
decoder-only step (LiteMedSAM: 2.2 s of 2.6 s per 256-px image, measured on this project's 2-core machine).

Images are recognised by their content (a hash of their pixels), so the cache serves any caller of
`frozen_features` (micro-batches, the lean encoder's chunks, validation) without knowing its indices. Features are
computed for the images a call has not seen, as one batch; served features equal recomputed ones up to the rounding
of batched kernels (a test compares a cached fine-tune with an uncached one). The cache stops growing at
`max_bytes`, and images beyond it are computed every time, as without the cache.

The timed steps never use it: they measure the step as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import torch

from cadbench.families import features as image_features
from cadbench.methods import Method

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of features: 256 LiteMedSAM tiles, 64 SAM images at 1024 px


class FrozenFeatureCache:
    """Serves `method.frozen_features` for the images it has seen (see the module's docstring)."""

    def __init__(self, method: Method, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.method, self.max_bytes = method, max_bytes
        self.features: dict[bytes, image_features.Features] = {}
        self.bytes = 0
        self.served = 0  # images served from the cache
        self.computed = 0  # images computed

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        return hashlib.blake2b(image.detach().to("cpu").contiguous().numpy().tobytes(), digest_size=16).digest()

    def __call__(self, compute, images: torch.Tensor) -> image_features.Features:
        keys = [self.key(image) for image in images]
        missing = [index for index, key in enumerate(keys) if key not in self.features]
        fresh = {}
        if missing:
            computed = compute(images[missing] if len(missing) < len(keys) else images)
            self.computed += len(missing)
            for row, index in enumerate(missing):
                fresh[index] = image_features.image(computed, row)
                size = image_features.nbytes(fresh[index])
                if keys[index] not in self.features and self.bytes + size <= self.max_bytes:
                    self.features[keys[index]] = image_features.clone(fresh[index])  # not a view keeping the batch
                    self.bytes += size
        self.served += len(keys) - len(missing)
        return image_features.stack([fresh[index] if index in fresh else self.features[key]
                                     for index, key in enumerate(keys)])

    @contextlib.contextmanager
    def installed(self) -> Iterator["FrozenFeatureCache"]:
        """`method.frozen_features` served by this cache inside the block (an instance attribute shadows the
        method's own, as a lever's does), restored after it."""
        method = self.method
        own = method.__dict__.get("frozen_features")
        compute = method.frozen_features
        method.frozen_features = lambda images: self(compute, images)
        try:
            yield self
        finally:
            if own is None:
                del method.frozen_features
            else:
                method.frozen_features = own


def frozen_feature_cache(method: Method, augmented: bool) -> contextlib.AbstractContextManager:
    """A cache installed on `method` when its frozen features repeat (its encoder runs under no_grad and the images
    are not augmented); otherwise a block that changes nothing."""
    if augmented or not method.encoder_under_no_grad:
        return contextlib.nullcontext()
    return FrozenFeatureCache(method).installed()
