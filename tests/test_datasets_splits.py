"""Datasets as users have them on disk: flat folders split by a seed, Kvasir-SEG and ISIC 2018 presets, masks named
with a suffix, and the error for a split that is not there."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cadbench.datasets import available_splits, open_dataset
from cadbench.datasets.layouts import detect_layout
from cadbench.errors import CadbenchError


def write_pair(images: Path, masks: Path, stem: str, mask_name: str | None = None, mask_ext: str = ".png",
               rows: int = 1) -> None:
    """An image and its mask; the mask's foreground covers `rows` rows, so a mispairing shows."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(images / f"{stem}.jpg", quality=95)
    mask = np.zeros((12, 16), np.uint8)
    mask[:rows] = 255
    Image.fromarray(mask).save(masks / f"{mask_name or stem}{mask_ext}")


def flat_folder(root: Path, count: int) -> Path:
    for index in range(count):
        write_pair(root / "images", root / "masks", f"img{index:02d}")
    return root


def test_a_flat_folder_is_split_by_a_seed_into_train_and_test(tmp_path):
    root = flat_folder(tmp_path / "flat", 10)
    train = open_dataset(root, "train", test_fraction=0.2, seed=0)
    test = open_dataset(root, "test", test_fraction=0.2, seed=0)
    assert (len(train), len(test)) == (8, 2)
    assert set(train.names).isdisjoint(test.names) and set(train.names) | set(test.names) == {
        f"img{i:02d}" for i in range(10)}
    assert test.split == "test" and train.split == "train"
    assert test.origin == "20% of 'all' held out, seed 0" and "20% of 'all' held out, seed 0" in test.summary()
    again = open_dataset(root, "test", test_fraction=0.2, seed=0)
    assert again.names == test.names  # deterministic
    others = {tuple(open_dataset(root, "test", test_fraction=0.2, seed=seed).names) for seed in range(1, 8)}
    assert len(others | {tuple(test.names)}) > 1  # the seed chooses
    assert len(open_dataset(root, "test", test_fraction=0.5, seed=0)) == 5


def test_held_out_parts_load_their_own_pairs(tmp_path):
    root = tmp_path / "flat"
    for index in range(6):
        write_pair(root / "images", root / "masks", f"s{index}", rows=index + 1)
    for split in ("train", "test"):
        dataset = open_dataset(root, split, test_fraction=0.34, seed=3)
        for sample in dataset:
            assert sample.original_mask.sum() == 16 * (int(sample.name[1:]) + 1)


def test_a_train_only_download_gets_its_test_split_from_train_and_trains_on_the_rest(tmp_path):
    for index in range(5):
        write_pair(tmp_path / "Train/Image", tmp_path / "Train/GT_Object", f"t{index}")
    train = open_dataset(tmp_path, "train", test_fraction=0.2, seed=0)
    test = open_dataset(tmp_path, "test", test_fraction=0.2, seed=0)
    assert (len(train), len(test)) == (4, 1) and set(train.names).isdisjoint(test.names)
    assert test.origin == "20% of 'train' held out, seed 0"


def test_a_dataset_with_its_own_test_split_is_never_resplit(tmp_path):
    for split in ("train", "test"):
        for index in range(3):
            write_pair(tmp_path / split / "images", tmp_path / split / "masks", f"{split}{index}")
    assert open_dataset(tmp_path, "train", test_fraction=0.2).names == ["train0", "train1", "train2"]
    assert open_dataset(tmp_path, "test", test_fraction=0.2).origin == ""


def test_a_missing_split_names_what_was_found_and_the_flag_that_fixes_it(tmp_path):
    flat = flat_folder(tmp_path / "flat", 3)
    with pytest.raises(CadbenchError) as caught:
        open_dataset(flat, "train", test_fraction=0.0)
    message = str(caught.value)
    assert "has no split 'train' (found: all)" in message and "--test-fraction 0.2" in message
    for index in range(2):
        write_pair(tmp_path / "cod/Test/Image", tmp_path / "cod/Test/GT_Object", f"t{index}")
    with pytest.raises(CadbenchError) as caught:
        open_dataset(tmp_path / "cod", "train", test_fraction=0.2)
    message = str(caught.value)
    assert "has no split 'train' (found: test)" in message and "--no-quality" in message
    assert "Train/Image" in message and "\n" not in message


def test_too_few_images_to_hold_out_a_test_split_are_refused(tmp_path):
    with pytest.raises(CadbenchError, match="cannot hold out a test split from 1 image"):
        open_dataset(flat_folder(tmp_path / "one", 1), "test", test_fraction=0.2)


@pytest.mark.parametrize("suffix", ["_mask", "_segmentation", "_gt", "-mask"])
def test_masks_named_with_a_common_suffix_pair_with_their_image(tmp_path, suffix):
    for index, stem in enumerate(["b", "a"]):
        write_pair(tmp_path / "images", tmp_path / "masks", stem, mask_name=stem + suffix, rows=index + 1)
    dataset = open_dataset(tmp_path, None)
    assert dataset.names == ["a", "b"]
    assert [int(sample.original_mask.sum()) for sample in dataset] == [32, 16]


def test_an_image_with_two_suffixed_masks_is_refused_rather_than_guessed(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "masks", "a", mask_name="a_mask")
    write_pair(tmp_path / "images", tmp_path / "masks", "a", mask_name="a_gt")
    with pytest.raises(CadbenchError, match="has several masks: a_gt.png, a_mask.png"):
        open_dataset(tmp_path, None)


def test_kvasir_seg_is_detected_by_its_marker_and_split_by_a_seed(tmp_path):
    root = tmp_path / "Kvasir-SEG"
    for index in range(5):
        write_pair(root / "images", root / "masks", f"cju{index}", mask_ext=".jpg")
    (root / "kavsir_bboxes.json").write_text("{}")
    assert detect_layout(root).name == "kvasir"
    assert list(available_splits(root)) == ["all"]
    train = open_dataset(root, "train", test_fraction=0.2, seed=0)
    test = open_dataset(root, "test", test_fraction=0.2, seed=0)
    assert (len(train), len(test)) == (4, 1)
    assert all(sample.original_mask.sum() == 16 for sample in train)  # JPEG masks, thresholded
    renamed = tmp_path / "polyps"
    root.rename(renamed)
    assert detect_layout(renamed).name == "kvasir"  # the marker file, not the folder name
    (renamed / "kavsir_bboxes.json").unlink()
    assert detect_layout(renamed).name == "folder"


def test_isic_2018_task_1_is_detected_and_pairs_its_segmentation_masks(tmp_path):
    folders = {"Training": 3, "Validation": 2, "Test": 2}
    for folder, count in folders.items():
        for index in range(count):
            write_pair(tmp_path / f"ISIC2018_Task1-2_{folder}_Input", tmp_path / f"ISIC2018_Task1_{folder}_GroundTruth",
                       f"ISIC_{folder[:2]}{index}", mask_name=f"ISIC_{folder[:2]}{index}_segmentation")
        (tmp_path / f"ISIC2018_Task1-2_{folder}_Input" / "LICENSE.txt").write_text("CC-BY-NC")
        (tmp_path / f"ISIC2018_Task1_{folder}_GroundTruth" / "ATTRIBUTION.txt").write_text("ISIC")
    assert detect_layout(tmp_path).name == "isic2018"
    assert list(available_splits(tmp_path)) == ["train", "validation", "test"]
    assert open_dataset(tmp_path, "train").names == ["ISIC_Tr0", "ISIC_Tr1", "ISIC_Tr2"]
    assert len(open_dataset(tmp_path, "validation")) == 2 and len(open_dataset(tmp_path, "test")) == 2
    # The usual download has only the training set: its test split is then held out from it.
    only_training = tmp_path / "training-only"
    for index in range(5):
        write_pair(only_training / "ISIC2018_Task1-2_Training_Input", only_training / "ISIC2018_Task1_Training_GroundTruth",
                   f"ISIC_{index}", mask_name=f"ISIC_{index}_segmentation")
    assert len(open_dataset(only_training, "test", test_fraction=0.2)) == 1
