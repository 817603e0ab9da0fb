"""The embedded default dataset: synthetic camouflage scenes, generated in memory from a seed.

Each scene is a background texture and one object cut from a second texture of the same family: the same colour
palette, the same kind of fractal noise, independent pattern, rescaled to the background's per-channel mean and
spread. The object differs only slightly (its pattern is a little coarser or finer, its tone 3-10 grey levels
lighter or darker), so it is hidden the way camouflaged animals are: by matching the statistics of their
surroundings, with the boundary as the main cue. Shapes vary between ellipses,
smooth blobs and polygons; sizes between about 3 % and 30 % of the image. An object set (`objects=True`, for the
object protocol) draws 0 to 4 smaller objects per scene (2-8 % each), labelled 1..K.

Scene `i` of a split depends only on (seed, split, i), so sets are reproducible and train and test never overlap.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from cadbench.datasets.dataset import MaskStats, SegmentationDataset
from cadbench.errors import CadbenchError

SYNTHETIC = "synthetic"  # the --dataset value that selects this set
SPLIT_STREAMS = {"train": 0, "test": 1}
DEFAULT_COUNTS = {"train": 64, "test": 32}
DEFAULT_HEIGHT, DEFAULT_WIDTH = 192, 256
SHAPES = ("ellipse", "blob", "polygon")
AREA_RANGE = (0.03, 0.30)
MIN_AREA = 0.01  # a scene is redrawn until the object covers at least this fraction of the image
# Object sets (objects=True, for --prompts-per-image N): 0 to MAX_OBJECTS smaller objects per scene.
MAX_OBJECTS = 4
OBJECT_AREA_RANGE = (0.02, 0.08)
OBJECT_STREAM = 1  # the seed stream of each scene's object count


@lru_cache(maxsize=8)
def _log_frequency(shape: tuple[int, int]) -> np.ndarray:
    """log |f| on the rfft2 grid of `shape` (0 at the DC term, which is zeroed separately)."""
    frequency = np.hypot(np.fft.fftfreq(shape[0])[:, None], np.fft.rfftfreq(shape[1])[None, :])
    frequency[0, 0] = 1.0
    return np.log(frequency).astype(np.float32)


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], slope: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with a 1/f^slope amplitude spectrum (larger slope: smoother pattern).

    Drawn directly in the frequency domain: random complex coefficients shaped by the spectrum, one inverse FFT.
    """
    amplitude = np.exp(-slope * _log_frequency(shape))
    amplitude[0, 0] = 0.0
    coefficients = rng.standard_normal((2, *amplitude.shape), dtype=np.float32)
    field = np.fft.irfft2((coefficients[0] + 1j * coefficients[1]) * amplitude, s=shape).astype(np.float32)
    return (field - field.mean()) / (field.std() + 1e-12)


# Natural anchor colours (sand, olive, bark, stone, moss, clay, dry grass); each palette jitters one of them.
EARTH_TONES = np.array([(194, 178, 128), (107, 110, 60), (120, 90, 60), (128, 126, 118),
                        (90, 110, 70), (160, 110, 80), (170, 160, 100)], dtype=np.float64)


class Palette:
    """A base colour and two colour directions along which two noise fields move it.

    The directions are mostly brightness with a little colour, which keeps textures natural-looking.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.base = EARTH_TONES[rng.integers(len(EARTH_TONES))] + rng.uniform(-15, 15, size=3)
        brightness = np.full((2, 3), 1 / np.sqrt(3))
        self.directions = brightness + rng.normal(0, 0.35, size=(2, 3))
        self.directions /= np.linalg.norm(self.directions, axis=1, keepdims=True)
        self.directions *= rng.uniform(18, 32, size=(2, 1))

    def paint(self, rng: np.random.Generator, shape: tuple[int, int], slope: float) -> np.ndarray:
        """(H, W, 3) float texture."""
        first, second = fractal_noise(rng, shape, slope), fractal_noise(rng, shape, slope + 0.2)
        texture = self.base.astype(np.float32) + first[..., None] * self.directions[0].astype(np.float32)
        texture += second[..., None] * self.directions[1].astype(np.float32)
        return texture + 3.0 * rng.standard_normal((*shape, 1), dtype=np.float32)  # sensor grain


def _ellipse(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, radius: float) -> np.ndarray:
    aspect = rng.uniform(0.45, 1.0)
    a, b = radius / np.sqrt(aspect), radius * np.sqrt(aspect)
    angle = rng.uniform(0, np.pi)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _blob(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, radius: float) -> np.ndarray:
    theta = np.arctan2(ys, xs)
    outline = np.ones_like(theta)
    for harmonic in range(2, 6):
        outline += rng.uniform(0, 0.35 / harmonic) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(ys, xs) <= radius * outline


def _polygon(rng: np.random.Generator, shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    corners = int(rng.integers(3, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, size=corners))
    radii = radius * rng.uniform(0.6, 1.3, size=corners)
    points = [(center[1] + r * np.cos(t), center[0] + r * np.sin(t)) for r, t in zip(radii, angles)]
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas) > 127


def object_mask(rng: np.random.Generator, shape: tuple[int, int],
                area_range: tuple[float, float] = AREA_RANGE) -> np.ndarray:
    """One object (ellipse, blob or polygon) of random size and place, mostly inside the frame."""
    height, width = shape
    while True:
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        radius = np.sqrt(rng.uniform(*area_range) * height * width / np.pi)
        margin = 0.6 * radius
        center = (rng.uniform(margin, height - margin), rng.uniform(margin, width - margin))
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        ys, xs = ys - center[0], xs - center[1]
        if kind == "ellipse":
            mask = _ellipse(rng, ys, xs, radius)
        elif kind == "blob":
            mask = _blob(rng, ys, xs, radius)
        else:
            mask = _polygon(rng, shape, center, radius)
        if mask.mean() >= MIN_AREA:
            return mask


def match_statistics(pixels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`pixels` (N, 3) shifted and scaled so each channel has the mean and spread of `reference` (M, 3)."""
    spread = pixels.std(axis=0) + 1e-6
    return (pixels - pixels.mean(axis=0)) / spread * reference.std(axis=0) + reference.mean(axis=0)


def camouflage_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) bool mask of one camouflaged object."""
    if min(height, width) < 8:
        raise ValueError(f"scenes need at least 8 x 8 pixels, got {height} x {width}")
    shape = (height, width)
    palette = Palette(rng)
    slope = rng.uniform(0.9, 1.3)
    background = palette.paint(rng, shape, slope)
    tone = rng.choice([-1.0, 1.0]) * rng.uniform(3, 10)
    foreground = palette.paint(rng, shape, slope + rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3))
    mask = object_mask(rng, shape)
    image = background.copy()
    image[mask] = match_statistics(foreground[mask], background[~mask]) + tone
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def objects_scene(rng: np.random.Generator, height: int, width: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) int32 labels of `count` camouflaged objects (0 to MAX_OBJECTS), each cut
    from its own texture of the scene's palette as in `camouflage_scene`; a later object may cover part of an
    earlier one."""
    shape = (height, width)
    palette = Palette(rng)
    slope = rng.uniform(0.9, 1.3)
    background = palette.paint(rng, shape, slope)
    image, labels = background.copy(), np.zeros(shape, np.int32)
    for label in range(1, count + 1):
        tone = rng.choice([-1.0, 1.0]) * rng.uniform(3, 10)
        foreground = palette.paint(rng, shape, slope + rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3))
        mask = object_mask(rng, shape, OBJECT_AREA_RANGE)
        image[mask] = match_statistics(foreground[mask], background[labels == 0]) + tone
        labels[mask] = label
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_STREAMS[split], index])


def object_count(seed: int, split: str, index: int) -> int:
    """How many objects scene `index` of an object set draws: 0 to MAX_OBJECTS, uniformly (an image without
    objects now and then: the object protocol skips it, and counts it)."""
    return int(np.random.default_rng([seed, SPLIT_STREAMS[split], index, OBJECT_STREAM]).integers(0, MAX_OBJECTS + 1))


class SyntheticCamouflage(SegmentationDataset):
    """Synthetic camouflage scenes, each generated the first time it is read (about 25 ms at 192 x 256 on one CPU
    core) and kept in memory (200 KB each). Scene `i` is a pure function of (seed, split, i); every mask has
    foreground.
    """

    def __init__(self, split: str = "train", seed: int = 0, image_size: int = 1024, count: int | None = None,
                 height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH, objects: bool = False) -> None:
        """`objects`: scenes of 0 to MAX_OBJECTS objects each (`objects_scene`), for the object protocol; its binary
        mask (`load`) is their union. Otherwise one object per scene (`camouflage_scene`)."""
        if split not in SPLIT_STREAMS:
            raise CadbenchError(f"synthetic dataset has no split {split!r}; available: {', '.join(SPLIT_STREAMS)}")
        count = DEFAULT_COUNTS[split] if count is None else count
        if count < 1:
            raise CadbenchError(f"synthetic dataset split {split!r} would be empty (count={count})")
        self.seed, self.height, self.width, self.objects = seed, height, width, objects
        self._scenes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        names = [f"synthetic-{split}-{seed}-{i:04d}" for i in range(count)]
        stats = MaskStats.binary(count)
        if objects:
            counts = np.array([object_count(seed, split, i) for i in range(count)], dtype=np.int64)
            stats.grey_levels[counts == 0, 255] = False  # an empty scene's mask holds only 0
            stats = MaskStats(counts > 0, stats.colour, stats.grey_levels)
        name = "synthetic-objects" if objects else "synthetic"
        super().__init__(name, split, image_size, names, stats)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self._scene(index)
        return (image, mask > 0) if self.objects else (image, mask)

    def load_objects(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.objects:
            return super().load_objects(index)
        return self._scene(index)

    def _scene(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index not in self._scenes:
            rng = scene_rng(self.seed, self.split, index)
            if self.objects:
                scene = objects_scene(rng, self.height, self.width, object_count(self.seed, self.split, index))
            else:
                scene = camouflage_scene(rng, self.height, self.width)
            for array in scene:
                array.setflags(write=False)  # shared by every later read
            self._scenes[index] = scene
        return self._scenes[index]
