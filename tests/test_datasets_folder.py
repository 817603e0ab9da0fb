"""Folder datasets: every layout preset, pairing by file stem, and bad input refused with one-line errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cadbench.datasets import SAMPLE_PATH, available_splits, open_dataset
from cadbench.errors import CadbenchError


def write_pair(images: Path, masks: Path, stem: str, size=(12, 16), value: int = 255, image_ext=".jpg") -> None:
    """An image whose red channel encodes `stem`'s hash, and a mask with a foreground square of `value`."""
    height, width = size
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = sum(map(ord, stem)) % 200 + 30
    Image.fromarray(image).save(images / f"{stem}{image_ext}", quality=100)
    mask = np.zeros((height, width), np.uint8)
    mask[2:6, 3:9] = value
    Image.fromarray(mask).save(masks / f"{stem}.png")


def one_line_error(path, split, match, **kwargs) -> str:
    with pytest.raises(CadbenchError, match=match) as caught:
        open_dataset(path, split, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# Each preset: how to lay out (split -> images folder, masks folder), and the split names it should offer.
PRESETS = {
    "folder": ({"train": ("train/images", "train/masks"), "test": ("test/images", "test/masks")}, ["test", "train"]),
    "cod10k": ({"train": ("Train/Image", "Train/GT_Object"), "test": ("Test/Image", "Test/GT_Object")},
               ["train", "test"]),
    "camo": ({"train": ("Images/Train", "GT"), "test": ("Images/Test", "GT")}, ["train", "test"]),
    "sinet": ({"train": ("TrainDataset/Imgs", "TrainDataset/GT"),
               "test/CAMO": ("TestDataset/CAMO/Imgs", "TestDataset/CAMO/GT"),
               "test/COD10K": ("TestDataset/COD10K/Imgs", "TestDataset/COD10K/GT")},
              ["train", "test/CAMO", "test/COD10K"]),
    "istd": ({"train": ("train/train_A", "train/train_B"), "test": ("test/test_A", "test/test_B")}, ["train", "test"]),
}


@pytest.mark.parametrize("layout", PRESETS)
def test_every_layout_is_detected_and_each_split_holds_its_own_pairs(tmp_path, layout):
    folders, split_names = PRESETS[layout]
    for split, (images, masks) in folders.items():
        tag = split.replace("/", "_")
        for index in range(2 if split == "train" else 1):
            write_pair(tmp_path / images, tmp_path / masks, f"{tag}_{index}")
    assert list(available_splits(tmp_path)) == split_names
    for split in folders:
        for forced in (None, layout):
            dataset = open_dataset(tmp_path, split, layout=forced, image_size=32)
            assert dataset.names == [f"{split.replace('/', '_')}_{i}" for i in range(len(dataset))]
            assert dataset.split == split and dataset.empty_masks == 0
            sample = dataset[0]
            assert sample.original_mask.shape == (12, 16) and sample.original_mask.sum() == 24


def test_flat_folder_and_istd_without_split_folders(tmp_path):
    write_pair(tmp_path / "flat/images", tmp_path / "flat/masks", "a")
    assert len(open_dataset(tmp_path / "flat", None)) == 1
    assert len(open_dataset(tmp_path / "flat", "all")) == 1
    message = one_line_error(tmp_path / "flat", "train", r"no split 'train' \(found: all\)")
    assert "--test-fraction 0.2" in message
    write_pair(tmp_path / "istd/train_A", tmp_path / "istd/train_B", "s1")
    assert open_dataset(tmp_path / "istd", "train").names == ["s1"]


def test_sinet_test_needs_a_name_when_there_are_several_sets(tmp_path):
    for name in ("CAMO", "NC4K"):
        write_pair(tmp_path / f"TestDataset/{name}/Imgs", tmp_path / f"TestDataset/{name}/GT", name.lower())
    message = one_line_error(tmp_path, "test", "has several 'test' splits; choose one of")
    assert "test/CAMO" in message and "test/NC4K" in message
    assert open_dataset(tmp_path, "test/nc4k").names == ["nc4k"]  # split names are case-insensitive


def test_pairs_follow_stems_not_sorted_order(tmp_path):
    """Images and masks whose sorted orders disagree still pair by stem; each sample gets its own mask."""
    stems = ["b", "a10", "a9", "c"]
    for index, stem in enumerate(stems):
        # A different mask area per stem, so a mispairing would show.
        write_pair(tmp_path / "images", tmp_path / "masks", stem, image_ext=[".jpg", ".png", ".bmp", ".jpeg"][index])
        mask = np.zeros((12, 16), np.uint8)
        mask[: index + 1, :] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}.png")
    dataset = open_dataset(tmp_path, None)
    for sample in dataset:
        assert sample.original_mask.sum() == 16 * (stems.index(sample.name) + 1)


def test_one_missing_mask_is_refused_and_named_rather_than_shifting_pairs(tmp_path):
    for stem in ("a", "b", "c"):
        write_pair(tmp_path / "images", tmp_path / "masks", stem)
    (tmp_path / "masks" / "b.png").unlink()
    message = one_line_error(tmp_path, None, "has no mask")
    assert str(tmp_path / "images" / "b.jpg") in message


def test_mask_without_image_is_refused(tmp_path):
    for stem in ("a", "b"):
        write_pair(tmp_path / "images", tmp_path / "masks", stem)
    (tmp_path / "images" / "a.jpg").unlink()
    message = one_line_error(tmp_path, None, "has no image")
    assert str(tmp_path / "masks" / "a.png") in message


def test_camo_shared_masks_serve_both_splits_but_orphans_are_refused(tmp_path):
    write_pair(tmp_path / "Images/Train", tmp_path / "GT", "train_1")
    write_pair(tmp_path / "Images/Test", tmp_path / "GT", "test_1")
    assert open_dataset(tmp_path, "train").names == ["train_1"]
    write_pair(tmp_path / "unused", tmp_path / "GT", "orphan")
    assert "GT/orphan.png" in one_line_error(tmp_path, "test", "has no image")


def test_missing_folders_are_named(tmp_path):
    assert str(tmp_path / "nowhere") in one_line_error(tmp_path / "nowhere", "train", "does not exist")
    write_pair(tmp_path / "train/images", tmp_path / "train/masks", "a")
    (tmp_path / "test/images").mkdir(parents=True)
    assert str(tmp_path / "test/masks") in one_line_error(tmp_path, "test", "masks folder .* does not exist")
    (tmp_path / "other").mkdir()
    assert str(tmp_path / "other") in one_line_error(tmp_path / "other", "train", "cannot tell the layout")
    assert "expected Train/Image" in one_line_error(tmp_path, "train", "does not look like", layout="cod10k")
    one_line_error(tmp_path, "train", "unknown dataset layout 'kitti'", layout="kitti")


def test_corrupt_image_is_refused_when_opened(tmp_path):
    for stem in ("a", "b"):
        write_pair(tmp_path / "images", tmp_path / "masks", stem, image_ext=".png")
    data = (tmp_path / "images" / "b.png").read_bytes()
    (tmp_path / "images" / "b.png").write_bytes(data[: len(data) // 2])  # truncated
    assert str(tmp_path / "images" / "b.png") in one_line_error(tmp_path, None, "cannot be read")
    (tmp_path / "images" / "b.png").write_bytes(b"not an image at all")
    assert str(tmp_path / "images" / "b.png") in one_line_error(tmp_path, None, "cannot be read")


def test_mask_of_another_size_is_refused(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "masks", "a")
    Image.fromarray(np.zeros((12, 15), np.uint8)).save(tmp_path / "masks" / "a.png")
    message = one_line_error(tmp_path, None, "is 15x12 but its image a.jpg is 16x12")
    assert str(tmp_path / "masks" / "a.png") in message


def test_empty_split_is_refused(tmp_path):
    (tmp_path / "train/images").mkdir(parents=True)
    (tmp_path / "train/masks").mkdir(parents=True)
    (tmp_path / "train/images/notes.txt").write_text("not an image")
    assert str(tmp_path / "train/images") in one_line_error(tmp_path, "train", "is empty")


def test_ambiguous_stems_are_refused(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "masks", "a")
    write_pair(tmp_path / "images", tmp_path / "masks", "a", image_ext=".png")
    one_line_error(tmp_path, None, "share the stem 'a'")


def test_empty_masks_are_allowed_and_counted_but_0_1_masks_refused(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "masks", "a")
    write_pair(tmp_path / "images", tmp_path / "masks", "b", value=0)
    write_pair(tmp_path / "images", tmp_path / "masks", "c", value=100)  # grey at or below 127 is background
    dataset = open_dataset(tmp_path, None)
    assert dataset.empty_masks == 2 and dataset.describe()["empty_masks"] == 2
    assert not dataset[2].original_mask.any()
    write_pair(tmp_path / "images", tmp_path / "masks", "d", value=1)
    one_line_error(tmp_path, None, "holds only the values 0 and 1")


def test_committed_sample_loads():
    assert [len(open_dataset(SAMPLE_PATH, split, image_size=128)) for split in ("train", "test")] == [4, 2]
