"""Training protocols: the registry, their geometry, and augmentations that keep an image and its mask aligned."""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from cadbench.datasets import PreparedDataset, SyntheticCamouflage
from cadbench.datasets.geometry import Letterbox, Squash, as_tv_tensors
from cadbench.errors import CadbenchError
from cadbench.training.augment import RandomRotate90, ShiftScaleRotate, cad_augmentation, sam_adapter_augmentation
from cadbench.training.protocols import available_protocols, get_protocol

PROTOCOLS = tuple(available_protocols())


def test_the_registry_has_the_three_protocols_and_names_the_valid_ones_on_a_typo():
    assert set(PROTOCOLS) == {"quick", "cad-paper", "sam-adapter-paper"}
    with pytest.raises(CadbenchError, match="unknown protocol 'cad'; valid: cad-paper, quick, sam-adapter-paper"):
        get_protocol("cad")


def test_paper_protocols_fix_batch_size_and_precision_and_quick_takes_the_cells():
    assert get_protocol("quick").trains_cell(8, "bf16") is None
    cad = get_protocol("cad-paper")
    assert cad.trains_cell(4, "fp32") is None
    assert "batch size 4" in cad.trains_cell(2, "fp32") and cad.trains_cell(4, "bf16") is not None
    assert get_protocol("sam-adapter-paper").trains_cell(2, "fp32") is None


def asymmetric_pair(height: int = 40, width: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """An 'F'-shaped mask (no symmetry: every flip and rotation changes it) and an image whose red channel is the
    mask and whose green and blue channels are ramps."""
    mask = np.zeros((height, width), bool)
    mask[6:34, 10:16] = True  # the stem
    mask[6:12, 16:40] = True  # the top bar
    mask[18:23, 16:32] = True  # the middle bar
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = mask * 255
    image[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    return image, mask


def agreement(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of pixels where the image's red channel and the mask say the same."""
    return float(((image[0] > 127) == (mask[0] > 0)).float().mean())


def augmented(transform, seed: int, image=None, mask=None):
    torch.manual_seed(seed)
    image_t, mask_t = as_tv_tensors(*(asymmetric_pair() if image is None else (image, mask)))
    return image_t, mask_t, transform(image_t, mask_t)


def test_the_alignment_check_fails_when_only_the_image_moves():
    """The negative control: with an asymmetric mask, moving the image alone is caught."""
    image, mask = as_tv_tensors(*asymmetric_pair())
    assert agreement(image, mask) == 1.0
    assert agreement(torch.flip(image, dims=[-1]), mask) < 0.9
    assert agreement(torch.rot90(image, 1, dims=(-2, -1)).contiguous()[:, :40, :40], mask[:, :40, :40]) < 0.9


@pytest.mark.parametrize("transform, exact", [
    (RandomRotate90(), True), (ShiftScaleRotate(), False), (cad_augmentation(), False),
    (sam_adapter_augmentation(), True)], ids=["rot90", "shift-scale-rotate", "cad", "sam-adapter"])
def test_augmentations_keep_image_and_mask_aligned(transform, exact):
    """Flips and quarter turns move pixels exactly; an affine map resamples the image bilinearly and the mask by
    nearest neighbour, which may differ on the object's edge only."""
    moved = 0
    for seed in range(40):
        image, mask, (out_image, out_mask) = augmented(transform, seed)
        assert isinstance(out_image, tv_tensors.Image) and isinstance(out_mask, tv_tensors.Mask)
        assert set(out_mask.unique().tolist()) <= {0, 1}  # masks are resampled nearest-neighbour
        assert agreement(out_image, out_mask) == 1.0 if exact else agreement(out_image, out_mask) > 0.97
        moved += not torch.equal(out_mask, mask)
    assert moved >= 10  # the transform does happen


def test_random_rotate90_draws_every_quarter_turn_including_none():
    seen = set()
    for seed in range(40):
        image, mask, (out_image, out_mask) = augmented(RandomRotate90(), seed, *[a[:, :40] for a in asymmetric_pair()])
        seen.add(next(k for k in range(4) if torch.equal(out_mask, torch.rot90(mask, k, dims=(-2, -1)))))
    assert seen == {0, 1, 2, 3}


def test_shift_scale_rotate_reflects_the_border_like_opencvs_reflect_101():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, :4] = 255  # a bright stripe along the left edge
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    mask[:, :, :4] = 1
    params = {"angle": 0.0, "scale": 1.0, "dx": 0.0625, "dy": 0.0}  # shift right by 2 pixels
    transform = ShiftScaleRotate()
    out_image = transform.transform(tv_tensors.Image(image), params)
    out_mask = transform.transform(tv_tensors.Mask(mask), params)
    # The 2 uncovered columns on the left mirror the stripe (reflect-101), instead of a constant fill.
    assert (out_image[:, :, :2] == 255).all() and (out_mask[:, :, :2] == 1).all()
    assert (out_image[:, :, 2:6] == 255).all() and (out_image[:, :, 6:] == 0).all()


def test_squash_geometry_trains_and_scores_at_the_squashed_size():
    image, mask = asymmetric_pair(30, 44)
    half = Squash(fraction=0.5, antialias=False, mask_sampling="nearest").prepare(image, mask, 128)
    assert half.image.shape == (3, 128, 128) and half.mask.shape == (1, 64, 64)
    assert half.original_mask.shape == (64, 64) and half.valid_size == (128, 128)
    assert half.image.dtype == torch.float32 and 0 <= float(half.image.min()) and float(half.image.max()) <= 255
    full = Squash().prepare(image, mask, 128)
    assert full.mask.shape == (1, 128, 128) and full.original_mask.shape == (128, 128)
    letterbox = Letterbox().prepare(image, mask, 128)
    assert letterbox.original_mask.shape == (30, 44) and letterbox.valid_size == (87, 128)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_each_protocol_keeps_its_training_samples_aligned(name):
    """Through the dataset view a fine-tune reads: protocol geometry, then its augmentation, per-sample seeds."""
    protocol = get_protocol(name)

    class Asymmetric(SyntheticCamouflage):
        def load(self, index):
            return asymmetric_pair()

    data = Asymmetric("train", image_size=128, count=12)
    for epoch in range(3):
        view = PreparedDataset(data, protocol.geometry, protocol.augment(), seed=0, epoch=epoch)
        for sample in view:
            target = torch.nn.functional.interpolate(sample.mask[None], size=sample.image.shape[-2:])[0]
            assert agreement(sample.image, target) > 0.95, (name, epoch, sample.name)
    again = PreparedDataset(data, protocol.geometry, protocol.augment(), seed=0, epoch=2)
    assert all(torch.equal(again[i].mask, view[i].mask) for i in range(len(data)))  # seeded per sample


def test_cads_half_resolution_average_is_bilinear_resizing_only_without_antialiasing():
    """methods/cad.py's note, on which the cad-paper geometry relies: a 2 x 2 average is what bilinear resizing by
    one half computes without antialiasing (OpenCV's INTER_LINEAR, as albumentations' A.Resize), not with it (PIL)."""
    images = torch.rand(1, 3, 64, 64) * 255
    average = torch.nn.functional.avg_pool2d(images, 2)
    plain = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=False)
    filtered = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
    assert torch.allclose(average, plain, atol=1e-4)
    assert (average - filtered).abs().max() > 10
