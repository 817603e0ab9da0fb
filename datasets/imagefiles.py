"""Finding and reading image and mask files, with one-line errors that name the file.

Bit depth: 8-bit files are read as they are; 16-bit greyscale files (PNG, TIFF) are scaled to 8 bits by their bit
depth (value / 257, rounded), never clipped; 32-bit integer and floating-point images are refused, since their range
is not known.

Mask rule: a pixel is foreground when its grey value is above 127. The grey value of a greyscale mask is the stored
value (scaled to 8 bits); that of a colour mask (RGB, RGBA, palette) is its **brightest channel**, so a pure red
(255, 0, 0) object counts as foreground, where a luminance conversion would make it grey 76 and silently empty the
mask. Masks whose channels differ by more than 64 somewhere are counted as colour masks and reported.
JPEG masks follow the same rule; the number of distinct grey values seen in a dataset's masks is reported, so
compression noise (more than two values) is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cadbench.errors import CadbenchError, summarize_names

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
FOREGROUND_ABOVE = 127
COLOUR_SPREAD = 64  # channels differing by more than this somewhere make a mask a colour mask
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
GREY_MODES = frozenset({"1", "L", "LA", "La", *SIXTEEN_BIT_MODES})


@dataclass
class FolderListing:
    """The image files directly in one folder, by file stem, and the files skipped for their extension."""

    files: dict[str, Path]
    unsupported: dict[str, Path] = field(default_factory=dict)


def list_folder(folder: Path, role: str) -> FolderListing:
    """The image files directly in `folder` (`role` is "images" or "masks"), keyed by file name without extension.

    Hidden files are ignored; files with another extension are kept aside, so that an error can name them. Two
    files with the same stem (``a.jpg`` and ``a.png``) make the pairing ambiguous and are refused.
    """
    if folder.exists() and not folder.is_dir():
        raise CadbenchError(f"{role} folder {folder} is a file, not a folder")
    if not folder.is_dir():
        raise CadbenchError(f"{role} folder {folder} does not exist")
    listing = FolderListing({})
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            listing.unsupported.setdefault(path.stem, path)
            continue
        if path.stem in listing.files:
            raise CadbenchError(f"two {role.removesuffix('s')} files, {listing.files[path.stem]} and {path.name}, "
                                f"share the stem {path.stem!r}; images and masks are paired by stem, so each stem "
                                "must be unique")
        listing.files[path.stem] = path
    return listing


def files_by_stem(folder: Path, role: str) -> dict[str, Path]:
    """`list_folder(folder, role).files`."""
    return list_folder(folder, role).files


def supported_extensions() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def _open(path: Path, role: str) -> Image.Image:
    """Open and fully decode `path`, so a truncated or corrupt file fails here and not in the middle of training."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CadbenchError(f"{role} {path} cannot be read: {reason}") from None
    return image


def _eight_bit(image: Image.Image, path: Path, role: str) -> Image.Image:
    """`image` with 8 bits per channel: 16-bit greyscale scaled by 255/65535; 32-bit and float modes refused.

    Older Pillow releases open a 16-bit greyscale PNG in mode ``I``; PNG has no 32-bit greyscale, so a PNG in that
    mode is 16-bit.
    """
    if _is_sixteen_bit(image, path, role):
        values = np.asarray(image).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")
    return image


def _is_sixteen_bit(image: Image.Image, path: Path, role: str) -> bool:
    """Whether `image` holds 16-bit greyscale; a depth cadbench does not read is refused in one line."""
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PNG"):
        return True
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "32-bit float"
        raise CadbenchError(f"{role} {path} is a {kind} (mode {image.mode}) image; cadbench reads 8 or 16 bits per "
                            "channel: convert it to an 8-bit PNG")
    return False


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; greyscale, 16-bit, palette and RGBA images are converted (alpha dropped)."""
    image = _open(path, "image")
    return np.asarray(_eight_bit(image, path, "image").convert("RGB"))


def read_mask_values(path: Path) -> tuple[np.ndarray, bool]:
    """(H, W) uint8 grey values of a mask before thresholding (the brightest channel of a colour mask), and
    whether it is a colour mask."""
    image = _eight_bit(_open(path, "mask"), path, "mask")
    if image.mode in GREY_MODES:
        return np.asarray(image.convert("L")), False
    rgb = np.asarray(image.convert("RGB"))
    brightest = rgb.max(axis=-1)
    colour = bool((brightest.astype(np.int16) - rgb.min(axis=-1)).max() > COLOUR_SPREAD)
    return brightest, colour


LOSSY_EXTENSIONS = frozenset({".jpg", ".jpeg", ".webp"})


def read_mask_labels(path: Path) -> np.ndarray:
    """(H, W) values of a mask for the object protocol (datasets.objects says which pixels make an object), read
    without the binary rule's scaling or thresholding: 16-bit greyscale as stored, a palette image's indices, 8-bit
    greyscale as stored, a colour mask's colours (each distinct RGB colour one value). A lossy file (JPEG, WebP)
    cannot hold labels exactly: it is read by the binary rule (grey above 127), its objects the components."""
    image = _open(path, "mask")
    if path.suffix.lower() in LOSSY_EXTENSIONS:
        return binarize(read_mask_values(path)[0]).astype(np.int32)
    if _is_sixteen_bit(image, path, "mask"):
        return np.asarray(image).astype(np.int32)
    if image.mode == "P":
        return np.asarray(image).astype(np.int32)
    if image.mode in GREY_MODES:
        return np.asarray(image.convert("L")).astype(np.int32)
    rgb = np.asarray(image.convert("RGB")).astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_gray_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 grey values of a mask, before thresholding (see the module docstring for colour masks)."""
    return read_mask_values(path)[0]


def binarize(gray: np.ndarray) -> np.ndarray:
    """Foreground where the grey value is above 127."""
    return gray > FOREGROUND_ABOVE


def read_mask(path: Path) -> np.ndarray:
    """(H, W) bool mask."""
    return binarize(read_gray_mask(path))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of a fully decodable image of a depth cadbench reads."""
    image = _open(path, "image")
    _is_sixteen_bit(image, path, "image")
    width, height = image.size
    return height, width


def describe_extra(paths: list[Path]) -> str:
    """' (and 3 more: b.png, c.png, d.png)' for the files beyond the first one named in an error."""
    if len(paths) <= 1:
        return ""
    return f" (and {len(paths) - 1} more: {summarize_names([p.name for p in paths[1:]])})"
