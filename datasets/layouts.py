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
| kvasir | ``images`` (beside ``kavsir_bboxes.json``) | ``masks`` (JPEG) |
| isic2018 | ``ISIC2018_Task1-2_<Split>_Input`` | ``ISIC2018_Task1_<Split>_GroundTruth`` (``<stem>_segmentation.png``) |

A dataset without a test split of its own (a flat folder, Kvasir-SEG, a train-only download) gets one held out
by a seeded split (`cadbench.datasets.folder.open_dataset`, ``test_fraction``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cadbench.errors import CadbenchError, unknown_name_error

FLAT_SPLIT = "all"
KVASIR_MARKER = "kavsir_bboxes.json"  # the file's name in the official Kvasir-SEG archive


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


def _is_kvasir(root: Path) -> bool:
    """Kvasir-SEG ships images/ and masks/ (JPEG, same names) beside its `kavsir_bboxes.json` (sic)."""
    has_folders = (root / "images").is_dir() and (root / "masks").is_dir()
    return has_folders and ((root / KVASIR_MARKER).is_file() or root.name.lower().startswith("kvasir"))


def _kvasir_splits(root: Path) -> dict[str, SplitFolders]:
    return {FLAT_SPLIT: SplitFolders(FLAT_SPLIT, root / "images", root / "masks")} if _is_kvasir(root) else {}


ISIC_SPLITS = {"train": "Training", "validation": "Validation", "test": "Test"}


def _isic_splits(root: Path) -> dict[str, SplitFolders]:
    """ISIC 2018 task 1: ISIC2018_Task1-2_<Split>_Input (images) and ISIC2018_Task1_<Split>_GroundTruth (masks
    named <image>_segmentation.png)."""
    return {
        name: SplitFolders(name, root / f"ISIC2018_Task1-2_{folder}_Input",
                           root / f"ISIC2018_Task1_{folder}_GroundTruth")
        for name, folder in ISIC_SPLITS.items()
        if (root / f"ISIC2018_Task1-2_{folder}_Input").is_dir()
    }


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
        Layout("kvasir", "Kvasir-SEG: images/ and masks/ beside kavsir_bboxes.json (no splits: a test split is "
               "held out by --test-fraction)", _is_kvasir, _kvasir_splits),
        Layout("isic2018", "ISIC2018_Task1-2_{Training,Validation,Test}_Input + "
               "ISIC2018_Task1_{Training,Validation,Test}_GroundTruth",
               lambda r: bool(_isic_splits(r)), _isic_splits),
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
    if root.exists() and not root.is_dir():
        raise CadbenchError(f"dataset {root} is a file, not a folder; --dataset takes a folder (with images/ and "
                            "masks/, or a known layout) or 'synthetic'")
    if not root.is_dir():
        raise CadbenchError(f"dataset folder {root} does not exist")
    if layout is None:
        return detect_layout(root)
    if layout not in LAYOUTS:
        raise unknown_name_error("dataset layout", layout, LAYOUTS)
    return LAYOUTS[layout]


def open_layout(root: str | Path, layout: str | None = None) -> tuple[Layout, dict[str, SplitFolders]]:
    """The layout of `root` (auto-detected unless `layout` names a preset) and every split it finds there."""
    root = Path(root)
    chosen = _layout_for(root, layout)
    splits = chosen.splits(root)
    if not splits:
        raise CadbenchError(f"dataset folder {root} does not look like the {chosen.name} layout: "
                            f"expected {chosen.expected}")
    return chosen, splits


def available_splits(root: str | Path, layout: str | None = None) -> dict[str, SplitFolders]:
    """Every split the layout finds under `root` (auto-detected unless `layout` names a preset)."""
    return open_layout(root, layout)[1]


def has_test_split(splits: dict[str, SplitFolders]) -> bool:
    return any(name.lower() == "test" or name.lower().startswith("test/") for name in splits)


def held_out_source(splits: dict[str, SplitFolders], test_fraction: float) -> str | None:
    """The split a test split is held out from, when the dataset has none of its own: 'train', else 'all' (a
    folder without splits). None when it has one, or when `test_fraction` is 0."""
    if test_fraction <= 0 or has_test_split(splits):
        return None
    by_lower = {name.lower(): name for name in splits}
    return by_lower.get("train") or by_lower.get(FLAT_SPLIT)


def find_split(splits: dict[str, SplitFolders], split: str) -> SplitFolders | None:
    """The split named `split` (case-insensitive; ``test`` also selects a single ``test/<name>`` set), or None.
    Raises when ``test`` matches several ``test/<name>`` sets."""
    by_lower = {name.lower(): folders for name, folders in splits.items()}
    wanted = split.lower()
    if wanted in by_lower:
        return by_lower[wanted]
    prefixed = [name for name in splits if name.lower().startswith(wanted + "/")]
    if len(prefixed) == 1:
        return by_lower[prefixed[0].lower()]
    if prefixed:
        raise CadbenchError(f"dataset has several {split!r} splits; choose one of {', '.join(prefixed)}")
    return None


def missing_split_error(root: Path, split: str, layout: Layout, splits: dict[str, SplitFolders]) -> CadbenchError:
    """The error for a split the dataset lacks: what was found, and the flag that fixes it."""
    found = f"dataset folder {root} has no split {split!r} (found: {', '.join(splits)})"
    source = held_out_source(splits, 0.2)
    if split.lower() in ("train", "test") and source is not None:
        rest = " (the rest is the train split)" if source == FLAT_SPLIT else ""
        return CadbenchError(f"{found}; --test-fraction 0.2 holds out a seeded 20% of {source!r} as the test "
                             f"split{rest}")
    if split.lower() == "train":
        return CadbenchError(f"{found}; fine-tuning needs one: give --dataset a folder that also holds the training "
                             f"images ({layout.name} layout: {layout.expected}), or measure without quality "
                             "(--no-quality)")
    return CadbenchError(f"{found}; choose one of {', '.join(splits)}")


def resolve_split(root: str | Path, split: str | None, layout: str | None = None) -> SplitFolders:
    """The folders of one of the dataset's own splits. Names are case-insensitive; ``test`` also selects a single
    ``test/<name>`` set; ``None`` selects the only split of a dataset that has one."""
    root = Path(root)
    chosen, splits = open_layout(root, layout)
    if split is None:
        if len(splits) == 1:
            return next(iter(splits.values()))
        raise CadbenchError(f"dataset folder {root} has several splits; choose one of {', '.join(splits)}")
    try:
        found = find_split(splits, split)
    except CadbenchError as exc:
        raise CadbenchError(f"{root}: {exc}") from None
    if found is None:
        raise missing_split_error(root, split, chosen, splits)
    return found
