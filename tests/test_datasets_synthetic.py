"""The synthetic camouflage set, SAM input geometry and batching."""

import numpy as np
import pytest
import torch

from cadbench.datasets import SyntheticCamouflage, collate, load_dataset
from cadbench.datasets.geometry import PAD_PIXEL, image_to_input, mask_to_input
from cadbench.datasets.synthetic import camouflage_scene, scene_rng
from cadbench.errors import CadbenchError
from cadbench.datasets.batch import Batch


def scenes(split="train", seed=0, count=6):
    dataset = SyntheticCamouflage(split, seed=seed, image_size=64, count=count)
    return [dataset.load(i) for i in range(count)]


def test_deterministic_for_a_seed_and_different_across_seeds_and_splits():
    first, again = scenes(seed=3), scenes(seed=3)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    for other in (scenes(seed=4), scenes("test", seed=3)):
        assert not any(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_masks_are_non_empty_varied_and_not_the_whole_image():
    found = scenes(count=24)
    areas = [mask.mean() for _, mask in found]
    assert all(0.01 <= area <= 0.6 for area in areas), areas
    assert max(areas) > 2 * min(areas)
    assert all(image.shape == (192, 256, 3) and image.dtype == np.uint8 for image, _ in found)


def test_object_texture_matches_background_statistics():
    for image, mask in scenes(count=40):
        inside, outside = image[mask].astype(float), image[~mask].astype(float)
        spread = outside.std(axis=0)
        # Means differ by the small tone shift only (at most 10 grey levels), spreads are equal.
        assert np.all(np.abs(inside.mean(axis=0) - outside.mean(axis=0)) <= 11), (inside.mean(0), outside.mean(0))
        assert np.all(np.abs(inside.std(axis=0) / spread - 1) < 0.1)
        assert spread.mean() > 8  # a texture, not a flat colour


def test_samples_have_sam_geometry_and_content_boxes():
    image, mask = camouflage_scene(scene_rng(0, "train", 0), 48, 64)
    tensor, mask_tensor = image_to_input(image, 128), mask_to_input(mask, 128)
    assert tensor.shape == (3, 128, 128) and mask_tensor.shape == (1, 128, 128)
    assert tensor.max() <= 255 and tensor.min() >= 0
    # Content fills the top 96 rows; below is padding (SAM's pixel mean: normalised padding is exactly 0).
    assert torch.equal(tensor[:, 96:, :], torch.tensor(PAD_PIXEL).view(3, 1, 1).expand(3, 32, 128))
    assert set(mask_tensor.unique().tolist()) <= {0.0, 1.0} and not mask_tensor[:, 96:].any()
    assert abs(mask_tensor[0, :96].mean().item() - mask.mean()) < 0.01  # nearest neighbour keeps the area

    dataset = SyntheticCamouflage("test", seed=1, image_size=128, count=3, height=48, width=64)
    batch = collate([dataset[i] for i in range(3)])
    assert batch.images.shape == (3, 3, 128, 128) and batch.masks.shape == (3, 1, 128, 128)
    assert torch.equal(batch.boxes, torch.tensor([[0.0, 0.0, 128.0, 96.0]] * 3))
    assert batch.valid_sizes == [(96, 128)] * 3 and batch.original_masks[0].shape == (48, 64)
    assert isinstance(batch.training_batch(), Batch) and batch.training_batch().size == 3


def test_bad_synthetic_requests_are_one_line_errors():
    with pytest.raises(CadbenchError, match="no split 'val'"):
        SyntheticCamouflage("val")
    with pytest.raises(CadbenchError, match="would be empty"):
        SyntheticCamouflage("train", count=0)
    assert load_dataset("synthetic", "test", image_size=64).describe() == {
        "dataset": "synthetic", "split": "test", "images": 32, "empty_masks": 0}
