"""Where a dataset keeps its images and masks: the folder layout presets and their detection.

Each preset maps split names (``train``, ``test``, ``test/<name>``; ``all`` for a folder without splits) to an
images folder and a masks folder. Only paths are worked out here; pairing and reading the files is elsewhere.

| layout | images | masks |
|---|---|---|
| folder | ``[<split>/]images`` | ``[<split>/]masks`` |
| cod10k | ``Train/Image``, ``Test/Image`` | ``Train/GT_Object``, ``Test/GT_Object`` |
| camo   | ``Images/Train``, ``Images/Test`` | ``GT`` (shared by both splits) or ``GT/Train``, ``GT/Test`` |
| sinet  | ``TrainDataset/Imgs``, ``TestDataset/<name>/Imgs`` | ``TrainDataset/GT``, ``TestDataset/<name>/GT`` |
| istd   | ``[train/]train_A``, ``[test/]test_A`` | ``[train/]train_B``, ``[test/]test_B`` (shadow masks) |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cadbench.errors import CadbenchError, unknown_name_error

FLAT_SPLIT = "all"


@dataclass(frozen=True)
class SplitFolders:
    """One split: its images folder, its masks folder, and the image folders of other splits sharing those masks."""

    name: str
    images: Path
    masks: Path
    shared_with: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Layout:
    name: str
    expected: str  # what the folder should contain, for error messages
    detect: Callable[[Path], bool]
    splits: Callable[[Path], dict[str, SplitFolders]]


def _subfolders(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def _folder_splits(root: Path) -> dict[str, SplitFolders]:
    if (root / "images").is_dir() or (root / "masks").is_dir():
        return {FLAT_SPLIT: SplitFolders(FLAT_SPLIT, root / "images", root / "masks")}
    return {
        child.name: SplitFolders(child.name, child / "images", child / "masks")
        for child in _subfolders(root)
        if (child / "images").is_dir() or (child / "masks").is_dir()
    }


def _cod10k_splits(root: Path) -> dict[str, SplitFolders]:
    return {
        folder.lower(): SplitFolders(folder.lower(), root / folder / "Image", root / folder / "GT_Object")
        for folder in ("Train", "Test")
        if (root / folder / "Image").is_dir()
    }


def _camo_splits(root: Path) -> dict[str, SplitFolders]:
    image_folders = {f.lower(): root / "Images" / f for f in ("Train", "Test") if (root / "Images" / f).is_dir()}
    splits = {}
    for name, images in image_folders.items():
        own_masks = root / "GT" / images.name
        if own_masks.is_dir():
            splits[name] = SplitFolders(name, images, own_masks)
        else:
            others = tuple(folder for other, folder in image_folders.items() if other != name)
            splits[name] = SplitFolders(name, images, root / "GT", shared_with=others)
    return splits


def _sinet_splits(root: Path) -> dict[str, SplitFolders]:
    splits = {}
    if (root / "TrainDataset").is_dir():
        splits["train"] = SplitFolders("train", root / "TrainDataset" / "Imgs", root / "TrainDataset" / "GT")
    if (root / "TestDataset").is_dir():
        for folder in _subfolders(root / "TestDataset"):
            name = f"test/{folder.name}"
            splits[name] = SplitFolders(name, folder / "Imgs", folder / "GT")
    return splits


def _istd_base(root: Path, split: str) -> Path:
    return root if (root / f"{split}_A").is_dir() else root / split


def _istd_splits(root: Path) -> dict[str, SplitFolders]:
    splits = {}
    for split in ("train", "test"):
        base = _istd_base(root, split)
        if (base / f"{split}_A").is_dir():
            splits[split] = SplitFolders(split, base / f"{split}_A", base / f"{split}_B")
    return splits


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("sinet", "TrainDataset/{Imgs,GT} and/or TestDataset/<name>/{Imgs,GT}",
               lambda r: (r / "TrainDataset").is_dir() or (r / "TestDataset").is_dir(), _sinet_splits),
        Layout("cod10k", "Train/Image + Train/GT_Object and/or Test/Image + Test/GT_Object",
               lambda r: (r / "Train" / "Image").is_dir() or (r / "Test" / "Image").is_dir(), _cod10k_splits),
        Layout("camo", "Images/Train and/or Images/Test, plus GT",
               lambda r: (r / "Images").is_dir() and (r / "GT").is_dir(), _camo_splits),
        Layout("istd", "train_A + train_B and/or test_A + test_B (optionally inside train/ and test/)",
               lambda r: bool(_istd_splits(r)), _istd_splits),
        Layout("folder", "images/ and masks/, or <split>/images and <split>/masks (e.g. train/, test/)",
               lambda r: bool(_folder_splits(r)), _folder_splits),
    )
}


def detect_layout(root: Path) -> Layout:
    """The first preset (in the order of `LAYOUTS`) whose marker folders exist under `root`."""
    for layout in LAYOUTS.values():
        if layout.detect(root):
            return layout
    expected = "; ".join(f"{layout.name}: {layout.expected}" for layout in LAYOUTS.values())
    raise CadbenchError(f"cannot tell the layout of dataset folder {root}; expected one of {expected}")


def _layout_for(root: Path, layout: str | None) -> Layout:
    if not root.is_dir():
        raise CadbenchError(f"dataset folder {root} does not exist")
    if layout is None:
        return detect_layout(root)
    if layout not in LAYOUTS:
        raise unknown_name_error("dataset layout", layout, LAYOUTS)
    return LAYOUTS[layout]


def available_splits(root: str | Path, layout: str | None = None) -> dict[str, SplitFolders]:
    """Every split the layout finds under `root` (auto-detected unless `layout` names a preset)."""
    root = Path(root)
    chosen = _layout_for(root, layout)
    splits = chosen.splits(root)
    if not splits:
        raise CadbenchError(f"dataset folder {root} does not look like the {chosen.name} layout: "
                            f"expected {chosen.expected}")
    return splits


def resolve_split(root: str | Path, split: str | None, layout: str | None = None) -> SplitFolders:
    """The folders of one split. Names are case-insensitive; ``test`` also selects a single ``test/<name>`` set;
    ``None`` selects the only split of a dataset that has one."""
    root = Path(root)
    splits = available_splits(root, layout)
    if split is None:
        if len(splits) == 1:
            return next(iter(splits.values()))
        raise CadbenchError(f"dataset folder {root} has several splits; choose one of {', '.join(splits)}")
    by_lower = {name.lower(): folders for name, folders in splits.items()}
    wanted = split.lower()
    if wanted in by_lower:
        return by_lower[wanted]
    prefixed = [name for name in by_lower if name.startswith(wanted + "/")]
    if len(prefixed) == 1:
        return by_lower[prefixed[0]]
    raise CadbenchError(f"dataset folder {root} has no split {split!r}; available: {', '.join(splits)}")
