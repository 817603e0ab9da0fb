"""Score saved fine-tuned weights (`cadbench run --save-weights`) on a dataset, without training.

The weights file holds only what trained (adapter + mask decoder); the frozen SAM under it is rebuilt from the
base the file names: the official checkpoint with the same sha256 (`checkpoint`), or, for a fine-tune of random
weights, the same random initialisation (the run's seed, on the device it was made on). A fingerprint of the frozen
weights, saved with the file, must match before anything is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cadbench.backbones import RANDOM_WEIGHTS, file_sha256, get_backbone
from cadbench.datasets import (
    NUCLEI_SAMPLE,
    SYNTHETIC,
    NucleiSample,
    SegmentationDataset,
    SyntheticCamouflage,
    open_dataset,
)
from cadbench.datasets.dataset import images_with_objects
from cadbench.errors import CadbenchError
from cadbench.training.protocols import get_protocol
from cadbench.training.quality import evaluate
from cadbench.training.setup import prepare
from cadbench.training.weights import base_fingerprint, load_trainable_state, read_weights
from cadbench.vocabulary.prompts import WHOLE_IMAGE


@dataclass
class Rescore:
    scores: dict[str, float | int]
    metadata: dict[str, str]
    dataset: SegmentationDataset
    protocol: str
    weights_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"weights_sha256": f"sha256:{self.weights_sha256}", "method": self.metadata["method"],
                "backbone": self.metadata["backbone"], "protocol": self.protocol,
                "dataset": self.dataset.summary(), **self.scores}


def _check_base(metadata: dict[str, str], checkpoint: str | None, path: Path) -> None:
    base = metadata.get("base_weights", RANDOM_WEIGHTS)
    if base == RANDOM_WEIGHTS:
        if checkpoint:
            raise CadbenchError(f"weights file {path} was fine-tuned on random {metadata['backbone']} weights; "
                                "leave out --checkpoint")
        return
    if not checkpoint:
        raise CadbenchError(f"weights file {path} was fine-tuned on the {metadata['backbone']} checkpoint {base}; "
                            "give that checkpoint with --checkpoint")
    actual = f"sha256:{file_sha256(checkpoint)}"
    if actual != base:
        raise CadbenchError(f"--checkpoint {checkpoint} is {actual[:19]}..., but weights file {path} was fine-tuned "
                            f"on {base[:19]}...")


def open_scored_split(dataset: str, split: str, image_size: int, layout: str | None, seed: int,
                      test_fraction: float, objects: bool = False) -> SegmentationDataset:
    """The split to score; `objects`: read for its objects (the object protocol), its images without any left out,
    as the run left them out."""
    if dataset == SYNTHETIC:
        data: SegmentationDataset = SyntheticCamouflage(split, seed=seed, image_size=image_size, objects=objects)
    elif dataset == NUCLEI_SAMPLE:
        data = NucleiSample(split, image_size=image_size, objects=objects)
    else:
        data = open_dataset(dataset, split, layout=layout, image_size=image_size, seed=seed,
                            test_fraction=test_fraction, objects=objects)
    return images_with_objects(data)[0] if objects else data


def rescore(weights: str | Path, dataset: str, split: str = "test", checkpoint: str | None = None,
            layout: str | None = None, protocol: str | None = None, seed: int | None = None,
            test_fraction: float | None = None, device: str = "auto", batch_size: int = 1) -> Rescore:
    """Scores (IoU, Dice, S/E/wF, MAE, BER) of the weights in `weights` on one split of `dataset` (per object,
    for weights fine-tuned with --prompts-per-image N, as their run scored them).

    `protocol`, `seed` and `test_fraction` default to those the weights were trained with, so that a dataset's
    held-out test split is the same images as in the run.
    """
    path = Path(weights)
    tensors, metadata = read_weights(path)
    for key in ("method", "backbone"):
        if key not in metadata:
            raise CadbenchError(f"weights file {path} does not say its {key}")
    _check_base(metadata, checkpoint, path)
    chosen = get_protocol(protocol or metadata.get("protocol", "quick"))
    run_seed = int(metadata.get("seed", 0))  # the random initialisation of a random base
    seed = run_seed if seed is None else seed  # the held-out split
    test_fraction = float(metadata.get("test_fraction", 0.2)) if test_fraction is None else test_fraction
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CadbenchError("--device cuda was asked for, but PyTorch sees no CUDA device here")
    random_base = metadata.get("base_weights", RANDOM_WEIGHTS) == RANDOM_WEIGHTS
    initialised_on = metadata.get("initialised_on", "cpu")
    if random_base and initialised_on == "cuda" and not torch.cuda.is_available():
        raise CadbenchError(f"weights file {path} was fine-tuned on random weights drawn on a CUDA device; "
                            "rebuilding them needs one")
    # the input size the weights were trained at (written since image sizes exist; before, always the native one)
    image_size = int(metadata.get("image_size", get_backbone(metadata["backbone"]).image_size))
    # weights saved before the dimension existed were trained on the whole-image protocol
    objects = metadata.get("prompts_per_image", WHOLE_IMAGE) != WHOLE_IMAGE
    data = open_scored_split(dataset, split, image_size, layout, seed, test_fraction, objects)
    torch.manual_seed(run_seed)
    build_on = initialised_on if random_base else device
    method = prepare(metadata["method"], metadata["backbone"], checkpoint=checkpoint, device=build_on,
                     image_size=image_size).method
    if "base_fingerprint" in metadata and base_fingerprint(method) != metadata["base_fingerprint"]:
        raise CadbenchError(f"the frozen {metadata['backbone']} weights rebuilt here differ from those weights file "
                            f"{path} was fine-tuned on; it cannot be scored on them")
    method.to(device)
    load_trainable_state(method, tensors, f"weights file {path}")
    scores = evaluate(method, data, batch_size=batch_size, geometry=chosen.geometry, objects=objects)
    return Rescore(scores, metadata, data, chosen.name, file_sha256(path))
