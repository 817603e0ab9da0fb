"""Image features as a family's image encoder returns them, batched and sliced without knowing which family.

SAM and LiteMedSAM return one tensor (B, C, g, g); SAM 2 returns a tuple of tensors (its FPN levels), each with the
batch first. The lean encoder concatenates chunks of them, the frozen-feature cache keeps them per image.
"""

from __future__ import annotations

import torch

Features = torch.Tensor | tuple[torch.Tensor, ...]


def concat(parts: list[Features]) -> Features:
    """Chunks of a batch, in order, as one batch (a single chunk is returned as it is)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return tuple(torch.cat(levels) for levels in zip(*parts))


def image(features: Features, index: int) -> Features:
    """One image's features, without the batch dimension."""
    if isinstance(features, torch.Tensor):
        return features[index]
    return tuple(level[index] for level in features)


def stack(images: list[Features]) -> Features:
    """Per-image features (as `image` gives them) as one batch."""
    if isinstance(images[0], torch.Tensor):
        return torch.stack(images)
    return tuple(torch.stack(levels) for levels in zip(*images))


def clone(features: Features) -> Features:
    if isinstance(features, torch.Tensor):
        return features.clone()
    return tuple(level.clone() for level in features)


def nbytes(features: Features) -> int:
    levels = (features,) if isinstance(features, torch.Tensor) else features
    return sum(level.numel() * level.element_size() for level in levels)


def add_to_embeddings(features: Features, addend: torch.Tensor) -> Features:
    """`addend` added to the map the mask decoder reads as its image embeddings: the one map of SAM and LiteMedSAM,
    SAM 2's coarsest FPN level (stride 16, the last); SAM 2's finer levels, which its decoder reads through its own
    `conv_s0` and `conv_s1`, are returned unchanged."""
    if isinstance(features, torch.Tensor):
        return features + addend
    *finer, embeddings = features
    return (*finer, embeddings + addend)
