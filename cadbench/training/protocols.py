"""Training protocols: how a method is fine-tuned and scored for quality, as typed, frozen objects in a registry.

A protocol owns what happens around the one shared training step (`cadbench.training.step.training_step`, the same
for every method and protocol): the data geometry, the augmentation, the optimizer and its schedule, the number of
epochs, the batch size and the resolution at which metrics are computed. `quick` is cadbench's short check;
`cad-paper` and `sam-adapter-paper` reproduce the reference codes' training and evaluation (docs/protocols.md cites
file and line for every choice, and lists what cadbench does differently).

    available_protocols() -> {name: Protocol};  get_protocol(name) -> Protocol (one-line error listing the names)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cadbench.datasets.geometry import Augment, Geometry, Letterbox, Squash
from cadbench.errors import unknown_name_error
from cadbench.training.augment import cad_augmentation, sam_adapter_augmentation
from cadbench.training.schedule import AdamW, Constant, CosineAnnealing, Schedule

DEFAULT_PROTOCOL = "quick"


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    reference: str  # the code it reproduces ("" for cadbench's own)
    geometry: Geometry  # image -> encoder input, training target and scoring target
    augmentation: Callable[[], Augment] | None  # makes the v2 pipeline (image and mask together); None: none
    optimizer: AdamW
    schedule: Schedule
    epochs: int | None  # None: train for --train-steps steps (quick); --epochs overrides either
    batch_size: int | None  # None: the cell's batch size
    precision: str | None  # None: the cell's precision

    def trains_cell(self, batch_size: int, precision: str) -> str | None:
        """None when a cell of this batch size and precision fine-tunes under this protocol, else why not.

        A paper protocol fixes batch size and precision, so one cell per method and backbone measures its quality
        (the others would repeat the same fine-tune)."""
        wanted = [f"batch size {self.batch_size}" if self.batch_size not in (None, batch_size) else "",
                  self.precision if self.precision not in (None, precision) else ""]
        if not any(wanted):
            return None
        return (f"the {self.name} protocol fine-tunes at batch size {self.batch_size} in {self.precision or 'any'} "
                f"precision only (the cell with those measures this method's quality)")

    def augment(self) -> Augment | None:
        return self.augmentation() if self.augmentation is not None else None

    def describe(self, image_size: int) -> dict[str, str]:
        """Each choice in words, for `cadbench list`, the report and docs."""
        epochs = f"{self.epochs} epochs" if self.epochs else "--train-steps steps"
        return {
            "geometry": self.geometry.describe(image_size),
            "augmentation": " ".join((self.augmentation.__doc__ or "").split()) if self.augmentation else "none",
            "optimizer": f"{self.optimizer.describe()}; {self.schedule.describe()}",
            "length": f"{epochs}, batch size {self.batch_size or 'of the cell'}",
            "precision": self.precision or "of the cell",
        }


BUILTIN_PROTOCOLS: dict[str, Protocol] = {
    protocol.name: protocol for protocol in (
        Protocol(
            name="quick",
            summary="cadbench's short fine-tune: --train-steps steps at a constant learning rate, no augmentation, "
                    "SAM's own letterbox geometry, scored at each mask's own resolution",
            reference="",
            geometry=Letterbox(), augmentation=None, optimizer=AdamW(), schedule=Constant(),
            epochs=None, batch_size=None, precision=None,
        ),
        Protocol(
            name="cad-paper",
            summary="CAD's training (Kim et al. 2024): images squashed to half the encoder size (512 px) and "
                    "upsampled for the encoder, flips / rot90 / shift-scale-rotate, AdamW 2e-4 with CAD's cosine "
                    "schedule, 20 epochs at batch size 4, scored at 512 px",
            reference="Kyyle2114/Convolutional-Adapter-for-Segment-Anything (code/run_cad.py, "
                      "code/segment_anything_cad/utils/trainer.py, code/run.sh, code/eval_cad.py)",
            geometry=Squash(fraction=0.5, antialias=False, mask_sampling="nearest"),
            augmentation=cad_augmentation, optimizer=AdamW(),
            schedule=CosineAnnealing(period="batches_per_epoch", eta_min=0.0),
            epochs=20, batch_size=4, precision="fp32",
        ),
        Protocol(
            name="sam-adapter-paper",
            summary="SAM-Adapter's training (Chen et al. 2023): images squashed to the encoder size (1024 px), "
                    "horizontal flips, AdamW 2e-4 with cosine annealing to 1e-7 over 20 epochs at batch size 2, "
                    "scored at 1024 px",
            reference="tianrun-chen/SAM-Adapter-PyTorch (train.py, datasets/wrappers.py, configs/cod-sam-vit-*.yaml)",
            geometry=Squash(fraction=1.0, antialias=True, mask_sampling="nearest-exact"),
            augmentation=sam_adapter_augmentation, optimizer=AdamW(),
            schedule=CosineAnnealing(period="epochs", eta_min=1e-7),
            epochs=20, batch_size=2, precision="fp32",
        ),
    )
}


def available_protocols() -> dict[str, Protocol]:
    return dict(BUILTIN_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    try:
        return BUILTIN_PROTOCOLS[name]
    except KeyError:
        raise unknown_name_error("protocol", name, BUILTIN_PROTOCOLS) from None
