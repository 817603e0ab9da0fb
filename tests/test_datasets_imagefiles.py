"""Reading image and mask files: bit depth, colour masks, JPEG masks, unsupported formats, and the wording of errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cadbench.datasets import open_dataset
from cadbench.datasets.imagefiles import read_gray_mask, read_mask, read_rgb
from cadbench.errors import CadbenchError


def one_line_error(path, split, match, **kwargs) -> str:
    with pytest.raises(CadbenchError, match=match) as caught:
        open_dataset(path, split, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def write(path: Path, array: np.ndarray, mode: str | None = None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **save) if mode else Image.fromarray(array).save(path, **save)
    return path


def square_mask(value, shape=(12, 16)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8) if np.isscalar(value) else np.zeros((*shape, len(value)), np.uint8)
    mask[2:6, 3:9] = value
    return mask


def test_16_bit_images_are_scaled_by_their_bit_depth_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 12 * 16).round().astype(np.uint16).reshape(12, 16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)  # Pillow stores uint16 as a 16-bit greyscale PNG (mode I;16)
    assert Image.open(path).mode.startswith("I;16")
    rgb = read_rgb(path)
    expected = np.rint(ramp / 257.0).astype(np.uint8)  # 65535 / 255 = 257
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 16, 3)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    assert (rgb[..., 0] == 255).mean() < 0.01  # clipping at 255 made nearly every pixel white


def test_32_bit_and_float_images_are_refused_in_one_line(tmp_path):
    path = write(tmp_path / "float.tif", np.full((4, 4), 0.5, np.float32))
    with pytest.raises(CadbenchError, match=r"float.tif is a 32-bit float \(mode F\) image") as caught:
        read_rgb(path)
    assert "\n" not in str(caught.value) and "8 or 16 bits" in str(caught.value)


def test_16_bit_masks_are_scaled_too(tmp_path):
    mask = square_mask(0).astype(np.uint16)
    mask[2:6, 3:9] = 65535
    path = tmp_path / "mask16.png"
    Image.fromarray(mask).save(path)
    assert read_mask(path).sum() == 24


def test_a_pure_red_colour_mask_is_read_by_its_brightest_channel_rather_than_silently_emptied(tmp_path):
    """Pillow's greyscale conversion turns pure red into 76, below the threshold: every mask was empty."""
    path = write(tmp_path / "red.png", square_mask((255, 0, 0)))
    assert read_mask(path).sum() == 24
    assert read_gray_mask(path).max() == 255


def test_colour_masks_are_counted_so_the_user_is_told_which_rule_was_applied(tmp_path):
    write(tmp_path / "images/a.png", np.zeros((12, 16, 3), np.uint8))
    write(tmp_path / "masks/a.png", square_mask((0, 0, 200)))
    write(tmp_path / "images/b.png", np.zeros((12, 16, 3), np.uint8))
    write(tmp_path / "masks/b.png", square_mask(255))
    dataset = open_dataset(tmp_path, None)
    assert dataset.colour_masks == 1 and dataset.empty_masks == 0
    assert "1 colour mask read by its brightest channel" in dataset.summary()


def test_jpeg_masks_are_thresholded_like_pngs_and_their_grey_values_counted(tmp_path):
    image = np.zeros((32, 32, 3), np.uint8)
    for stem in ("a", "b"):
        write(tmp_path / f"images/{stem}.png", image)
        mask = np.zeros((32, 32), np.uint8)
        mask[5:21, 7:23] = 255  # not aligned to JPEG's 8 x 8 blocks, so its edges ring
        write(tmp_path / f"masks/{stem}.jpg", mask, quality=75)
    dataset = open_dataset(tmp_path, None)
    assert dataset.grey_values > 2
    for sample in dataset:
        assert abs(int(sample.original_mask.sum()) - 16 * 16) <= 16
    assert f"{dataset.grey_values} grey values" in dataset.summary()
    png = tmp_path / "png"
    write(png / "images/a.png", image)
    write(png / "masks/a.png", square_mask(255, (32, 32)))
    assert open_dataset(png, None).grey_values == 2


def test_a_gif_mask_is_named_as_an_unsupported_format_not_as_missing(tmp_path):
    write(tmp_path / "images/a.png", np.zeros((12, 16, 3), np.uint8))
    write(tmp_path / "masks/a.gif", square_mask(255))
    message = one_line_error(tmp_path, None, "unsupported")
    assert str(tmp_path / "masks" / "a.gif") in message and ".gif" in message and "no mask with" not in message
    assert ".png" in message  # the supported extensions are listed


def test_two_files_sharing_a_stem_are_named_in_plain_words(tmp_path):
    write(tmp_path / "images/a.png", np.zeros((12, 16, 3), np.uint8))
    write(tmp_path / "images/a.jpg", np.zeros((12, 16, 3), np.uint8))
    write(tmp_path / "masks/a.png", square_mask(255))
    message = one_line_error(tmp_path, None, "share the stem")
    assert message.startswith("two image files, ") and "images files" not in message
    write(tmp_path / "images/b.png", np.zeros((12, 16, 3), np.uint8))
    (tmp_path / "images/a.jpg").unlink()
    write(tmp_path / "masks/b.png", square_mask(255))
    write(tmp_path / "masks/b.bmp", square_mask(255))
    assert one_line_error(tmp_path, None, "share the stem").startswith("two mask files, ")


def test_a_file_given_as_the_dataset_is_called_a_file_not_missing(tmp_path):
    archive = tmp_path / "kvasir-seg.zip"
    archive.write_bytes(b"PK\x03\x04")
    message = one_line_error(archive, "train", "is a file, not a folder")
    assert str(archive) in message and "does not exist" not in message
