"""Write the tiny committed sample dataset (`datasets/sample/`) from the synthetic generator.

Run once, from the repository root: ``python -m cadbench.datasets.make_sample``. The result is committed, so the
tests read fixed files rather than regenerating them. Folder layout with train/ and test/ splits; sizes differ and
are not square, so loading exercises the resizing, padding and box prompts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from cadbench.datasets.synthetic import camouflage_scene

SIZES = {"train": [(28, 40), (40, 28), (32, 32), (24, 44)], "test": [(30, 36), (36, 26)]}  # (height, width)
SEED = 2024


def write_sample(root: Path, seed: int = SEED) -> list[Path]:
    written = []
    for split_index, (split, sizes) in enumerate(SIZES.items()):
        for index, (height, width) in enumerate(sizes):
            image, mask = camouflage_scene(np.random.default_rng([seed, split_index, index]), height, width)
            stem = f"{split}_{index:02d}"
            for folder, array in (("images", image), ("masks", mask.astype(np.uint8) * 255)):
                path = root / split / folder / f"{stem}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path, optimize=True)
                written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sample")
    paths = write_sample(parser.parse_args().out)
    print(f"wrote {len(paths)} files, {sum(p.stat().st_size for p in paths)} bytes")


if __name__ == "__main__":
    main()
