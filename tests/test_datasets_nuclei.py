"""`--dataset nuclei-sample`: the bundled stardist files, their tiles, split and objects."""

import hashlib

import numpy as np
import torch
import pytest

from cadbench.datasets import NucleiSample, load_dataset, open_splits
from cadbench.datasets.dataset import PreparedDataset, ALL_OBJECTS
from cadbench.datasets.nuclei import FILES, bundled_file, read_sample
from cadbench.errors import CadbenchError


def test_the_bundled_files_are_stardist_0_9_2s_own_byte_for_byte():
    assert hashlib.sha256(bundled_file("img2d.tif").read_bytes()).hexdigest() == \
        "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750"
    assert hashlib.sha256(bundled_file("mask2d.tif").read_bytes()).hexdigest() == \
        "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f"
    assert set(FILES) == {"img2d.tif", "mask2d.tif"}
    text = bundled_file("README.md").read_text()
    assert "CC0" in text and "Caicedo" in text and "BSD 3-Clause" in text
    assert "Uwe Schmidt" in bundled_file("LICENSE-stardist.txt").read_text()


def test_the_image_becomes_min_max_scaled_grey_replicated_to_rgb_and_the_mask_holds_125_nuclei():
    rgb, labels = read_sample()
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert len(np.unique(labels)) - 1 == 125


def test_the_split_is_by_tile_top_half_trains_bottom_half_tests_and_every_nucleus_is_an_object():
    splits = open_splits("nuclei-sample", 256, objects=True)
    assert splits.train.names == ["nuclei-tile0", "nuclei-tile1"]
    assert splits.test.names == ["nuclei-tile2", "nuclei-tile3"]
    assert splits.train.object_counts().tolist() == [35, 33]
    assert splits.test.object_counts().tolist() == [40, 29]
    assert "tiles 2 and 3 of 4" in splits.split_description()
    image, labels = splits.test.load_objects(1)
    assert image.shape == (256, 256, 3) and labels.shape == (256, 256)
    _, full = read_sample()
    assert np.array_equal(labels, full[256:, 256:])
    view = PreparedDataset(splits.test, objects=ALL_OBJECTS)
    sample = view[0]
    assert sample.objects.count == 40 and sample.image.shape == (3, 256, 256)


def test_the_sample_follows_the_encoder_size_and_refuses_an_unknown_split_in_one_line():
    dataset = load_dataset("nuclei-sample", "test", image_size=1024)
    sample = dataset.sample(0)
    assert sample.image.shape == (3, 1024, 1024) and sample.original_mask.shape == (256, 256)
    with pytest.raises(CadbenchError, match="nuclei-sample has no split 'val'"):
        NucleiSample("val")


def test_evaluation_boxes_are_the_tight_box_plus_the_stated_margin_and_training_boxes_jitter_outward_seeded():
    from cadbench.datasets.objects import EVAL_BOX_MARGIN_PX, TRAIN_BOX_DISTORTION

    test = NucleiSample("test", image_size=256, objects=True)
    tight = test.sample(0, objects=True).objects.boxes
    scored = PreparedDataset(test, objects=ALL_OBJECTS)[0].objects.boxes
    expected = tight + torch.tensor([-1.0, -1.0, 1.0, 1.0]) * EVAL_BOX_MARGIN_PX
    assert torch.allclose(scored, expected.clamp(0, 256))
    assert (scored != tight).any()
    train = NucleiSample("train", image_size=256, objects=True)
    first = PreparedDataset(train, seed=0, epoch=0, objects=8)[0].objects.boxes
    again = PreparedDataset(train, seed=0, epoch=0, objects=8)[0].objects.boxes
    other_epoch = PreparedDataset(train, seed=0, epoch=1, objects=8)[0].objects.boxes
    assert torch.equal(first, again) and not torch.equal(first, other_epoch)
    # each edge moved outward from the evaluation box by at most TRAIN_BOX_DISTORTION of the object's side
    chosen_tight = train.sample(0, objects=True).objects
    from cadbench.datasets.objects import choose_objects
    from cadbench.datasets.dataset import sample_seed
    picked = chosen_tight.boxes[choose_objects(chosen_tight.count, 8, sample_seed(0, 0, 0))]
    margin = (picked + torch.tensor([-1.0, -1.0, 1.0, 1.0]) * EVAL_BOX_MARGIN_PX).clamp(0, 256)
    outward = (first - margin) * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    sides = torch.stack([picked[:, 2] - picked[:, 0], picked[:, 3] - picked[:, 1]] * 2, dim=1)
    assert (outward >= -1e-5).all() and (outward <= TRAIN_BOX_DISTORTION * sides + 1e-5).all()
    assert (outward > 0).any()
