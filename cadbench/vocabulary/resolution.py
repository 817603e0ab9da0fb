"""The input resolution: the side, in pixels, of the square image the encoder takes, a dimension of every cell.

A cell holds `NATIVE_IMAGE_SIZE` (0) for the backbone's own size (1024 px for SAM, 128 for the test-scale SAM), so
that a cell at the native size keeps the key it had before the dimension existed; any other size is held as its
pixels. Which size is native is the backbone's to say (`cadbench.backbones.BackboneSpec.input_size`): this floor
knows no backbone, and `cadbench.harness.grid.make_cell` turns a size equal to the native one into 0.
"""

from __future__ import annotations

from cadbench.errors import CadbenchError

NATIVE_IMAGE_SIZE = 0  # the cell's value for "the backbone's own size"
PATCH_SIZE = 16  # every backbone's patch side: the encoder's token grid is S / 16 tokens a side
MAX_IMAGE_SIZE = 2048
IMAGE_SIZE_FLAG = "--image-size"
IMAGE_SIZE_RULE = f"a positive multiple of {PATCH_SIZE} (the patch size) and at most {MAX_IMAGE_SIZE}"


def check_image_size(value: object, native_allowed: bool = True) -> int:
    """The size if it is a positive multiple of the patch size up to MAX_IMAGE_SIZE (or 0, the native size, where
    `native_allowed`: a cell may hold it, a user may not write it); else a one-line error naming the flag and the
    rule."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CadbenchError(f"{IMAGE_SIZE_FLAG} {value!r}: the image size must be {IMAGE_SIZE_RULE}")
    if native_allowed and value == NATIVE_IMAGE_SIZE:
        return value
    if value <= 0 or value % PATCH_SIZE or value > MAX_IMAGE_SIZE:
        raise CadbenchError(f"{IMAGE_SIZE_FLAG} {value}: the image size must be {IMAGE_SIZE_RULE}")
    return value


def image_size_label(pixels: int) -> str:
    """For people: '512 px'."""
    return f"{pixels} px"


__all__ = ["IMAGE_SIZE_FLAG", "IMAGE_SIZE_RULE", "MAX_IMAGE_SIZE", "NATIVE_IMAGE_SIZE", "PATCH_SIZE",
           "check_image_size", "image_size_label"]
