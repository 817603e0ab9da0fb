"""`--dataset nuclei-sample`: real fluorescence microscopy, bundled (datasets/nuclei/README.md says from where).

One 512 x 512 image of nuclei (16-bit grey) with its instance mask (a label image, 125 nuclei), from the 2018 Data
Science Bowl through stardist 0.9.2. It is cut into four 256 x 256 tiles, numbered row by row:

    tile 0 (rows 0-255,   cols 0-255)   tile 1 (rows 0-255,   cols 256-511)     train: tiles 0 and 1 (68 nuclei)
    tile 2 (rows 256-511, cols 0-255)   tile 3 (rows 256-511, cols 256-511)     test:  tiles 2 and 3 (69 nuclei)

A nucleus cut by a tile border is an object of each tile it reaches (its part there). The split is by tile, fixed:
the top half trains, the bottom half is held out (no seed, no --test-fraction).

The model's RGB input: the 16-bit image is min-max scaled over the whole 512 x 512 image (so every tile shares one
scale) to 0-255, rounded to uint8, and the grey channel replicated to three. What a backbone does after that (SAM's
or LiteMedSAM's pixel normalisation) is the backbone's business. The binary mask (`load`) is nucleus vs background;
the objects (`load_objects`) are the label image's values, one object each.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

import numpy as np

from cadbench.datasets.dataset import MaskStats, SegmentationDataset
from cadbench.errors import CadbenchError

NUCLEI_SAMPLE = "nuclei-sample"
TILE = 256
SPLIT_TILES = {"train": (0, 1), "test": (2, 3)}  # tiles numbered row by row over the 2 x 2 grid
FILES = {  # name -> sha256 of the bundled, unmodified stardist 0.9.2 file
    "img2d.tif": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
    "mask2d.tif": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
}


def bundled_file(name: str):
    """The installed path (an importlib.resources Traversable) of one bundled file."""
    return resources.files("cadbench.datasets").joinpath("nuclei", name)


def file_sha256(name: str) -> str:
    return hashlib.sha256(bundled_file(name).read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def read_sample() -> tuple[np.ndarray, np.ndarray]:
    """(512, 512, 3) uint8 RGB input (see the module docstring) and (512, 512) int32 nucleus labels; read once."""
    from PIL import Image

    arrays = []
    for name in FILES:
        try:
            with bundled_file(name).open("rb") as handle, Image.open(handle) as image:
                arrays.append(np.array(image))
        except OSError as exc:  # a broken installation, not a user's mistake: still one line
            raise CadbenchError(f"{NUCLEI_SAMPLE}: cannot read the bundled {name} ({exc}); reinstall cadbench")
    grey, labels = arrays
    grey = grey.astype(np.float64)
    low, high = grey.min(), grey.max()
    scaled = np.rint((grey - low) * (255.0 / (high - low))).astype(np.uint8) if high > low else \
        np.zeros(grey.shape, np.uint8)
    rgb = np.repeat(scaled[..., None], 3, axis=2)
    labels = labels.astype(np.int32)
    for array in (rgb, labels):
        array.setflags(write=False)
    return rgb, labels


def tile_slices(tile: int) -> tuple[slice, slice]:
    row, col = divmod(tile, 2)
    return slice(row * TILE, (row + 1) * TILE), slice(col * TILE, (col + 1) * TILE)


class NucleiSample(SegmentationDataset):
    """One split of the nuclei sample: its 256-px tiles (see the module docstring)."""

    def __init__(self, split: str = "train", image_size: int = 256, objects: bool = False) -> None:
        if split not in SPLIT_TILES:
            raise CadbenchError(f"{NUCLEI_SAMPLE} has no split {split!r}; available: {', '.join(SPLIT_TILES)}")
        self.tiles = SPLIT_TILES[split]
        self.objects = objects
        stats = MaskStats.binary(len(self.tiles))  # every tile holds nuclei; binary masks are 0/255
        super().__init__(NUCLEI_SAMPLE, split, image_size, [f"nuclei-tile{tile}" for tile in self.tiles], stats,
                         origin=f"tiles {' and '.join(map(str, self.tiles))} of 4, the "
                                f"{'top' if split == 'train' else 'bottom'} half, 256 px each")

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.load_objects(index)
        return image, labels > 0

    def load_objects(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = tile_slices(self.tiles[index])
        image, labels = read_sample()
        return image[rows, cols], labels[rows, cols]


__all__ = ["FILES", "NUCLEI_SAMPLE", "NucleiSample", "SPLIT_TILES", "TILE", "bundled_file", "file_sha256",
           "read_sample"]
