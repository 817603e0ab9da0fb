"""Finding and reading image and mask files, with one-line errors that name the file.

Mask rule: a mask is read as 8-bit grayscale (Pillow's ``convert("L")``, so palette and RGB masks count by the
brightness of their colours) and a pixel is foreground when its value is above 127.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cadbench.errors import CadbenchError, summarize_names

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
FOREGROUND_ABOVE = 127


def files_by_stem(folder: Path, role: str) -> dict[str, Path]:
    """The image files directly in `folder`, keyed by file name without extension.

    Hidden files and files without an image extension are ignored. Two files with the same stem (``a.jpg`` and
    ``a.png``) make the pairing ambiguous and are refused.
    """
    if not folder.is_dir():
        raise CadbenchError(f"{role} folder {folder} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            raise CadbenchError(f"{role} files {found[path.stem]} and {path.name} share the stem {path.stem!r}; "
                                "images and masks are paired by stem, so each stem must be unique")
        found[path.stem] = path
    return found


def _open(path: Path, role: str) -> Image.Image:
    """Open and fully decode `path`, so a truncated or corrupt file fails here and not in the middle of training."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CadbenchError(f"{role} {path} cannot be read: {reason}") from None
    return image


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; grayscale, palette and RGBA images are converted (alpha dropped)."""
    return np.asarray(_open(path, "image").convert("RGB"))


def read_gray_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 grayscale values of a mask, before thresholding."""
    return np.asarray(_open(path, "mask").convert("L"))


def binarize(gray: np.ndarray) -> np.ndarray:
    """Foreground where the grayscale value is above 127."""
    return gray > FOREGROUND_ABOVE


def read_mask(path: Path) -> np.ndarray:
    """(H, W) bool mask."""
    return binarize(read_gray_mask(path))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of a fully decodable image."""
    width, height = _open(path, "image").size
    return height, width


def describe_extra(paths: list[Path]) -> str:
    """' (and 3 more: b.png, c.png, d.png)' for the files beyond the first one named in an error."""
    if len(paths) <= 1:
        return ""
    return f" (and {len(paths) - 1} more: {summarize_names([p.name for p in paths[1:]])})"
